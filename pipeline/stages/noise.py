"""Stage `noise`: x + factor * N(0, 1), clipped to [0, 1], seeded, for train and test."""

from __future__ import annotations

import numpy as np

from pipeline import paths
from pipeline.arrays import save_arrays
from pipeline.config import Params
from pipeline.datasets import load_prepared


def add_gaussian_noise(images: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    noisy = images + factor * rng.standard_normal(images.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def noisy_copies(
    x_train: np.ndarray, x_test: np.ndarray, factor: float, seed: int
) -> dict[str, np.ndarray]:
    """Train then test from one generator, so each is a fixed function of (data, factor, seed)."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": add_gaussian_noise(x_train, factor, rng),
        "x_test": add_gaussian_noise(x_test, factor, rng),
    }


def run(params: Params) -> None:
    split = load_prepared(paths.PREPARED_DIR)
    noisy = noisy_copies(split.x_train, split.x_test, params.noise.factor, params.noise.seed)
    save_arrays(paths.NOISY_DIR, noisy)
    print(f"noise: factor {params.noise.factor}, seed {params.noise.seed} -> {paths.NOISY_DIR}/")
