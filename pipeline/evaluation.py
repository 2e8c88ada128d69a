"""What `evaluate` measures, as pure functions of arrays (the models enter as callables)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pipeline.baselines import FILTERS, Baseline, pca_baseline, tune
from pipeline.metrics import mean_psnr, mean_ssim, reconstruction_metrics
from pipeline.probe import pca_features, probe_accuracy
from pipeline.stages.noise import add_gaussian_noise

Denoiser = Callable[[np.ndarray], np.ndarray]


def reconstruction_groups(
    clean: np.ndarray, noisy: np.ndarray, reconstructed: np.ndarray, denoised: np.ndarray
) -> dict[str, dict[str, float]]:
    """Every score compares with the clean test images."""
    return {
        "basic_on_clean": reconstruction_metrics(clean, reconstructed),
        "denoiser_on_noisy": reconstruction_metrics(clean, denoised),
        "noisy_input": reconstruction_metrics(clean, noisy),
    }


def all_baselines(clean_train: np.ndarray, components: int) -> list[Baseline]:
    return [*FILTERS, pca_baseline(clean_train, components)]


def compare_denoisers(
    baselines: Sequence[Baseline],
    clean: np.ndarray,
    noisy: np.ndarray,
    tuning_clean: np.ndarray,
    tuning_noisy: np.ndarray,
    autoencoder_name: str,
    denoised: np.ndarray,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One row per method (PSNR, SSIM on the test set; parameter tuned on held-out images),
    best first, and each method's outputs."""
    outputs = {autoencoder_name: denoised}
    rows = [{"method": autoencoder_name, "parameter": "", "value": ""}]
    for baseline in baselines:
        value = tune(baseline, tuning_noisy, tuning_clean)
        outputs[baseline.name] = baseline(noisy, value)
        rows.append({"method": baseline.name, "parameter": baseline.parameter, "value": value})
    outputs["noisy_input"] = noisy
    rows.append({"method": "noisy_input", "parameter": "", "value": ""})
    for row in rows:
        row["psnr"] = mean_psnr(clean, outputs[row["method"]])
        row["ssim"] = mean_ssim(clean, outputs[row["method"]])
    rows.sort(key=lambda row: -row["psnr"])
    return rows, outputs


def robustness_curve(
    denoiser: Denoiser,
    baseline: Baseline,
    clean: np.ndarray,
    tuning_clean: np.ndarray,
    factors: Sequence[float],
    seed: int,
) -> list[dict]:
    """PSNR against noise factor for the denoiser, a baseline (`baseline_psnr`, re-tuned at each
    factor on the held-out images) and the noisy input."""
    rows = []
    for index, factor in enumerate(factors):
        rng = np.random.default_rng([seed, index])
        noisy = add_gaussian_noise(clean, factor, rng)
        tuning_noisy = add_gaussian_noise(tuning_clean, factor, rng)
        value = tune(baseline, tuning_noisy, tuning_clean)
        rows.append(
            {
                "noise_factor": factor,
                "denoiser_psnr": mean_psnr(clean, denoiser(noisy)),
                "baseline_psnr": mean_psnr(clean, baseline(noisy, value)),
                "noisy_psnr": mean_psnr(clean, noisy),
            }
        )
    return rows


def representation_probe(
    codes: dict[str, tuple[np.ndarray, np.ndarray]],
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    components: int,
) -> dict[str, float]:
    """Logistic-regression accuracy on each model's codes, on PCA features of the same size and
    on raw pixels: can the code replace the pixels?"""
    features = dict(codes)
    features[f"pca_{components}"] = pca_features(train, test, components)
    features["raw_pixels"] = (train, test)
    return {
        name: probe_accuracy(train_x, train_labels, test_x, test_labels)
        for name, (train_x, test_x) in features.items()
    }


def embed_2d(codes: np.ndarray, seed: int) -> np.ndarray:
    """t-SNE of the codes, for a map coloured by digit."""
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(codes) - 1) / 3)
    return TSNE(2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(codes)
