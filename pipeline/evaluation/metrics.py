"""Reconstruction metrics on images in [0, 1], averaged over images."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from pipeline.data.images import IMAGE_SIDE
from pipeline.evaluation import parallel

# Keras clips probabilities to [eps, 1 - eps] before the log; so do we, to report the same BCE.
KERAS_EPSILON = 1e-7


def binary_cross_entropy(target: np.ndarray, predicted: np.ndarray) -> float:
    p = np.clip(predicted.astype(np.float64), KERAS_EPSILON, 1 - KERAS_EPSILON)
    t = target.astype(np.float64)
    return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))


def mean_squared_error(target: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean((target.astype(np.float64) - predicted.astype(np.float64)) ** 2))


# Identical images would score +inf dB; they score this instead, so that means, tables and JSON
# stay finite. No real pair comes near: at noise 0.4 the best denoiser scores about 21 dB.
PSNR_CEILING_DB = 100.0


def psnr_per_image(target: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """PSNR in dB of each flat image (data range 1): skimage's `peak_signal_noise_ratio`, for a
    whole stack at once, capped at PSNR_CEILING_DB."""
    squared_error = (target.astype(np.float64) - predicted.astype(np.float64)) ** 2
    floor = 10 ** (-PSNR_CEILING_DB / 10)
    return 10 * np.log10(1.0 / np.maximum(squared_error.mean(axis=1), floor))


def mean_psnr(target: np.ndarray, predicted: np.ndarray) -> float:
    """PSNR in dB of each image (data range 1), averaged over the images."""
    return float(psnr_per_image(target, predicted).mean())


def ssim_per_image(target: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """SSIM of each flat 28x28 image (data range 1, skimage's 7x7 window)."""
    images = [
        flat.reshape(-1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float64) for flat in (target, predicted)
    ]
    return np.array(
        [structural_similarity(a, b, data_range=1.0) for a, b in zip(*images, strict=True)]
    )


def mean_ssim(target: np.ndarray, predicted: np.ndarray) -> float:
    """SSIM of each image, averaged over the images; on both cores for large stacks."""
    return float(parallel.per_image(ssim_per_image, [target, predicted]).mean())


def reconstruction_metrics(target: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "bce": binary_cross_entropy(target, predicted),
        "mse": mean_squared_error(target, predicted),
        "psnr": mean_psnr(target, predicted),
        "ssim": mean_ssim(target, predicted),
    }
