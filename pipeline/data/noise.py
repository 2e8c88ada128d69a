"""Seeded Gaussian noise, x + factor * N(0, 1) clipped to [0, 1], with one stream per split.

The draws of each split come from a generator of their own, keyed by `(noise.seed, split)`. So the
noisy test images are the same bytes whatever `data.train_size` or `data.tuning_size` is, and,
since image i always takes the i-th block of its split's stream, the first N noisy test images of
a larger test set are those of a smaller one. Models trained on different training sets are
therefore scored on the same benchmark. The robustness curves reuse each split's draws at every
factor, so their point at `noise.factor` is the benchmark itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence

import numpy as np

from pipeline.data.images import NOISY_ARRAYS, Split


def standard_normal(seed: int, split: str, shape: tuple[int, ...]) -> np.ndarray:
    """The N(0, 1) draws of `split`, from the stream keyed by `(seed, split)`."""
    stream = zlib.crc32(f"noise/{split}".encode())  # a fixed number per split name
    return np.random.default_rng([seed, stream]).standard_normal(shape)


def add_gaussian_noise(images: np.ndarray, factor: float, draws: np.ndarray) -> np.ndarray:
    return np.clip(images + factor * draws, 0.0, 1.0).astype(np.float32)


def noisy_split(images: np.ndarray, split: str, factor: float, seed: int) -> np.ndarray:
    return add_gaussian_noise(images, factor, standard_normal(seed, split, images.shape))


def noisy_copies(split: Split, factor: float, seed: int) -> dict[str, np.ndarray]:
    """Noisy train, test and tuning images, each split from its own stream."""
    return {name: noisy_split(getattr(split, name), name, factor, seed) for name in NOISY_ARRAYS}


def at_each_factor(
    clean: np.ndarray, split: str, factors: Sequence[float], seed: int
) -> Iterator[tuple[float, np.ndarray]]:
    """(factor, noisy images) for each point of a robustness curve: the split's own draws,
    scaled by each factor in turn."""
    draws = standard_normal(seed, split, clean.shape)
    for factor in factors:
        yield factor, add_gaussian_noise(clean, factor, draws)
