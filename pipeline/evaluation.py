"""What `evaluate` measures, as pure functions of arrays (the models enter as callables)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from pipeline.baselines import FILTERS, Baseline, pca_baseline, tune
from pipeline.metrics import mean_psnr, mean_ssim, reconstruction_metrics
from pipeline.probe import probe_accuracy
from pipeline.stages.noise import add_gaussian_noise

Denoiser = Callable[[np.ndarray], np.ndarray]
NOISY_INPUT = "noisy_input"


def reconstruction_groups(
    clean: np.ndarray, reconstructed: np.ndarray, denoised: np.ndarray
) -> dict[str, dict[str, float]]:
    """Every score compares with the clean test images."""
    return {
        "basic_on_clean": reconstruction_metrics(clean, reconstructed),
        "denoiser_on_noisy": reconstruction_metrics(clean, denoised),
    }


def all_baselines(clean_train: np.ndarray, components: int) -> list[Baseline]:
    return [*FILTERS, pca_baseline(clean_train, components)]


def table_row(method: str, psnr: float, ssim: float, parameter: str = "", value="") -> dict:
    """One row of the denoisers table (`parameter` and `value`: what tuning chose)."""
    return {"method": method, "parameter": parameter, "value": value, "psnr": psnr, "ssim": ssim}


def best_first(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda row: -row["psnr"])


def compare_baselines(
    baselines: Sequence[Baseline],
    clean: np.ndarray,
    noisy: np.ndarray,
    tuning_clean: np.ndarray,
    tuning_noisy: np.ndarray,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One row per baseline (PSNR, SSIM on the test set; parameter tuned on held-out images),
    and each baseline's outputs."""
    rows, outputs = [], {}
    for baseline in baselines:
        value = tune(baseline, tuning_noisy, tuning_clean)
        output = outputs[baseline.name] = baseline(noisy, value)
        psnr, ssim = mean_psnr(clean, output), mean_ssim(clean, output)
        rows.append(table_row(baseline.name, psnr, ssim, baseline.parameter, value))
    return rows, outputs


def robustness_noise(
    clean: np.ndarray,
    factors: Sequence[float],
    seed: int,
    tuning_clean: np.ndarray | None = None,
) -> Iterator[tuple[float, np.ndarray, np.ndarray | None]]:
    """(factor, noisy test images, noisy tuning images if asked) for each point of the
    robustness curve. The test images are drawn first, so they are the same arrays in every
    stage that asks, with or without tuning images."""
    for index, factor in enumerate(factors):
        rng = np.random.default_rng([seed, index])
        noisy = add_gaussian_noise(clean, factor, rng)
        tuning = None if tuning_clean is None else add_gaussian_noise(tuning_clean, factor, rng)
        yield factor, noisy, tuning


def baseline_robustness(
    baseline: Baseline,
    clean: np.ndarray,
    tuning_clean: np.ndarray,
    factors: Sequence[float],
    seed: int,
) -> list[dict]:
    """PSNR against noise factor of a baseline (re-tuned at each factor on the held-out images)
    and of the noisy input."""
    rows = []
    for factor, noisy, tuning_noisy in robustness_noise(clean, factors, seed, tuning_clean):
        value = tune(baseline, tuning_noisy, tuning_clean)
        rows.append(
            {
                "noise_factor": factor,
                "baseline_psnr": mean_psnr(clean, baseline(noisy, value)),
                "noisy_psnr": mean_psnr(clean, noisy),
            }
        )
    return rows


def denoiser_robustness(
    denoiser: Denoiser, clean: np.ndarray, factors: Sequence[float], seed: int
) -> list[float]:
    """The denoiser's PSNR at each noise factor, on the images `baseline_robustness` scores."""
    return [
        mean_psnr(clean, denoiser(noisy)) for _, noisy, _ in robustness_noise(clean, factors, seed)
    ]


def probe_accuracies(
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    train_labels: np.ndarray,
    test_labels: np.ndarray,
) -> dict[str, float]:
    """Logistic-regression accuracy on each (train, test) feature pair: model codes, PCA
    features of the same size, raw pixels. Can the code replace the pixels?"""
    return {
        name: probe_accuracy(train_x, train_labels, test_x, test_labels)
        for name, (train_x, test_x) in features.items()
    }


def score_lines(table: list[dict], accuracies: dict[str, float]) -> list[str]:
    """The denoisers table and the probe accuracies, as the stages print them."""
    lines = [
        f"{row['method']:22s} PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.3f}" for row in table
    ]
    scores = ", ".join(f"{name} {accuracy:.4f}" for name, accuracy in accuracies.items())
    return [*lines, f"probe accuracy {scores}"]


def embed_2d(codes: np.ndarray, seed: int) -> np.ndarray:
    """t-SNE of the codes, for a map coloured by digit."""
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(codes) - 1) / 3)
    return TSNE(2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(codes)
