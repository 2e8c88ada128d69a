"""Stage `noise`: x + factor * N(0, 1), clipped to [0, 1], seeded, for train and test."""

from __future__ import annotations

import numpy as np

from pipeline import paths
from pipeline.arrays import save_arrays
from pipeline.config import Params
from pipeline.datasets import NOISY_ARRAYS, Split, load_prepared


def add_gaussian_noise(images: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    noisy = images + factor * rng.standard_normal(images.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def noisy_copies(split: Split, factor: float, seed: int) -> dict[str, np.ndarray]:
    """Train, test, tuning in turn from one generator: each a fixed function of its inputs."""
    rng = np.random.default_rng(seed)
    return {name: add_gaussian_noise(getattr(split, name), factor, rng) for name in NOISY_ARRAYS}


def run(params: Params) -> None:
    split = load_prepared(paths.PREPARED_DIR)
    noisy = noisy_copies(split, params.noise.factor, params.noise.seed)
    save_arrays(paths.NOISY_DIR, noisy)
    print(f"noise: factor {params.noise.factor}, seed {params.noise.seed} -> {paths.NOISY_DIR}/")
