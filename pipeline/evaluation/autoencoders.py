"""The core of stage `evaluate`: both autoencoders on the test set, the denoiser ranked among the
baselines and against noise strength, the probe on their codes, and the figures. The models
enter as functions of arrays, so this module runs without TensorFlow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pipeline.artifacts.baseline_results import NOISY_INPUT, BaselineResults
from pipeline.artifacts.history import HistoryRow
from pipeline.core.config import Params
from pipeline.core.errors import DataError
from pipeline.core.progress import Report, scores, silent
from pipeline.data.images import NoisySplit, Split
from pipeline.data.noise import at_each_factor
from pipeline.evaluation import figures
from pipeline.evaluation.metrics import mean_psnr, reconstruction_metrics
from pipeline.evaluation.probe import probes_started
from pipeline.evaluation.table import best_first, table_row

MAP_POINTS = 2000  # test codes in the 2-D map (t-SNE cost grows fast with the count)
# t-SNE steps, 250 of them exaggerated (scikit-learn's default is 1000). On the dense model's
# 2000 test codes: 4.2 s instead of 9.3 s, 10-neighbour trustworthiness 0.968 instead of 0.970.
MAP_ITERATIONS = 500
PRIOR_SAMPLES = 64
INTERPOLATION_STEPS = 10
AUTOENCODER = "autoencoder"

ArrayFunction = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Autoencoders:
    """The trained basic model and denoiser, as functions of arrays."""

    kind: str  # dense, conv or vae
    reconstruct: ArrayFunction  # the basic model: images -> images
    denoise: ArrayFunction  # the denoiser: noisy images -> images
    encode_basic: ArrayFunction  # images -> codes (a VAE's: the mean of the code)
    encode_denoiser: ArrayFunction
    decode_basic: ArrayFunction  # codes -> images


@dataclass(frozen=True)
class Evaluation:
    metrics: dict  # what reports/metrics.json holds
    table: list[dict]  # the denoisers table, best first
    robustness: list[dict]  # one row per noise factor
    figures: dict[str, Figure]  # name -> figure, saved as reports/figures/<name>.png


def evaluate_autoencoders(
    params: Params,
    split: Split,
    noisy: NoisySplit,
    reference: BaselineResults,
    models: Autoencoders,
    histories: dict[str, list[HistoryRow]],
    report: Report = silent,
) -> Evaluation:
    """Both models on the test set, the denoiser among the baselines and against noise strength,
    the probe on their codes, and the figures."""
    x_test = split.x_test
    reconstructed = finite_outputs("the basic model", models.reconstruct(x_test))
    denoised = finite_outputs("the denoiser", models.denoise(noisy.x_test))
    metrics: dict[str, Any] = {**reconstruction_groups(x_test, reconstructed, denoised)}
    metrics["noisy_input"] = reference.noisy_input
    ours = metrics["denoiser_on_noisy"]
    report(f"both models on {len(x_test)} test images: denoiser PSNR {ours['psnr']:.2f} dB")

    table = best_first([table_row(AUTOENCODER, ours["psnr"], ours["ssim"]), *reference.table])
    metrics["denoisers"] = {
        row["method"]: {"psnr": row["psnr"], "ssim": row["ssim"]} for row in table
    }
    metrics["best_baseline"] = reference.best
    metrics["model_kind"] = models.kind

    denoiser_psnr = denoiser_robustness(
        models.denoise,
        x_test[: params.evaluate.robustness_size],
        params.evaluate.robustness_factors,
        params.noise.seed,
    )
    curve = [
        {"noise_factor": row["noise_factor"], "denoiser_psnr": psnr, **row}
        for psnr, row in zip(denoiser_psnr, reference.robustness, strict=True)
    ]
    report(f"denoiser against noise: {len(curve)} noise factors")

    basic_codes = (models.encode_basic(split.x_train), models.encode_basic(x_test))
    denoiser_codes = (models.encode_denoiser(split.x_train), models.encode_denoiser(x_test))
    with probes_started(
        {"basic_codes": basic_codes, "denoiser_codes": denoiser_codes},
        split.y_train,
        split.y_test,
    ) as probe_scores:  # beside the figures and the t-SNE map
        drawn = _figures(params, split, noisy, reference, table, curve, reconstructed, denoised)
        drawn["code_map"] = figures.code_map(
            embed_2d(basic_codes[1][:MAP_POINTS], params.seed),
            split.y_test[:MAP_POINTS],
            f"t-SNE of the {models.kind} model's test codes",
        )
        report("t-SNE map of the codes")
        code_accuracy = probe_scores()
    metrics["probe_accuracy"] = {**code_accuracy, **reference.probe_accuracy}
    report(f"linear probe on the codes: {scores(code_accuracy)}")
    drawn["codes"] = figures.code_grid(basic_codes[1][: params.evaluate.n_examples])
    drawn["loss_curves"] = figures.loss_curves(histories)
    if models.kind == "vae":
        drawn.update(_vae_figures(params, models, basic_codes[1]))
    return Evaluation(metrics, table, curve, drawn)


def finite_outputs(model: str, outputs: np.ndarray) -> np.ndarray:
    """`outputs`, unless the model's outputs are not numbers (NaN weights, from a run that
    diverged): every score and figure would be meaningless, so stop before computing any."""
    bad = ~np.isfinite(outputs).reshape(len(outputs), -1).all(axis=1)
    if bad.any():
        raise DataError(
            f"{model} outputs NaN or infinite values for {int(bad.sum())} of {len(outputs)} "
            "test images: its training diverged; retrain it with a lower learning rate"
        )
    return outputs


def _figures(
    params: Params,
    split: Split,
    noisy: NoisySplit,
    reference: BaselineResults,
    table: list[dict],
    curve: list[dict],
    reconstructed: np.ndarray,
    denoised: np.ndarray,
) -> dict[str, Figure]:
    """The tutorial's image rows, and the denoiser among the baselines."""
    n = params.evaluate.n_examples
    x_test, noisy_test, denoised = split.x_test[:n], noisy.x_test[:n], denoised[:n]
    outputs = {AUTOENCODER: denoised, **reference.examples}
    shown = [row["method"] for row in table if row["method"] != NOISY_INPUT]
    return {
        "reconstructions": figures.image_rows(
            {"original": x_test, "reconstructed": reconstructed[:n]}
        ),
        "noisy_samples": figures.image_rows({"noisy": noisy_test}),
        "denoised": figures.image_rows({"noisy": noisy_test, "denoised": denoised}),
        "denoiser_comparison": figures.image_rows(
            {
                "noisy": noisy_test,
                **{method: outputs[method][:n] for method in shown},
                "original": x_test,
            }
        ),
        "denoiser_scores": figures.denoiser_scores(table),
        "robustness": figures.robustness(curve, reference.best),
    }


def _vae_figures(params: Params, models: Autoencoders, test_codes: np.ndarray) -> dict:
    """Digits decoded from the prior, and a walk through code space from the first test digit to
    the second (to the prior's mean when the test set has one image)."""
    dim = params.model.encoding_dim
    prior = np.random.default_rng(params.seed).standard_normal((PRIOR_SAMPLES, dim))
    start = test_codes[0]
    end = test_codes[1] if len(test_codes) > 1 else np.zeros_like(start)
    steps = np.linspace(0, 1, INTERPOLATION_STEPS)[:, None]
    path = ((1 - steps) * start + steps * end).astype(np.float32)
    return {
        "vae_prior_samples": figures.image_grid(
            models.decode_basic(prior.astype(np.float32)), 8, "decoded from N(0, I)"
        ),
        "vae_interpolation": figures.image_rows({"interpolation": models.decode_basic(path)}),
    }


def reconstruction_groups(
    clean: np.ndarray, reconstructed: np.ndarray, denoised: np.ndarray
) -> dict[str, dict[str, float]]:
    """Every score compares with the clean test images."""
    return {
        "basic_on_clean": reconstruction_metrics(clean, reconstructed),
        "denoiser_on_noisy": reconstruction_metrics(clean, denoised),
    }


def denoiser_robustness(
    denoiser: ArrayFunction, clean: np.ndarray, factors: Sequence[float], seed: int
) -> list[float]:
    """The denoiser's PSNR at each noise factor, on the images `baseline_robustness` scores."""
    return [
        mean_psnr(clean, denoiser(noisy))
        for _, noisy in at_each_factor(clean, "x_test", factors, seed)
    ]


def embed_2d(codes: np.ndarray, seed: int) -> np.ndarray:
    """t-SNE of the codes, for a map coloured by digit.

    scikit-learn's PCA initialisation divides by the spread of the codes: with one code
    dimension, or codes that are all equal (a collapsed model), it yields NaNs and the
    Barnes-Hut step crashes the process; those cases start from a random layout instead.
    """
    from sklearn.manifold import TSNE

    if len(codes) < 2:
        return np.zeros((len(codes), 2), np.float32)
    varied = codes.shape[1] >= 2 and bool(np.ptp(codes, axis=0).any())
    perplexity = min(30.0, (len(codes) - 1) / 3)
    return TSNE(
        2,
        init="pca" if varied else "random",
        random_state=seed,
        perplexity=perplexity,
        max_iter=MAP_ITERATIONS,
    ).fit_transform(codes)
