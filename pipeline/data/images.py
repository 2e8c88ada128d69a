"""The arrays each stage hands to the next, with the shape, dtype and range every reader checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.arrays import ArraySpec, load_array

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE

RAW_SPECS = {
    "x_train": ArraySpec("uint8", (60_000, IMAGE_SIDE, IMAGE_SIDE)),
    "y_train": ArraySpec("uint8", (60_000,), (0, 9)),
    "x_test": ArraySpec("uint8", (10_000, IMAGE_SIDE, IMAGE_SIDE)),
    "y_test": ArraySpec("uint8", (10_000,), (0, 9)),
}
IMAGES_SPEC = ArraySpec("float32", (None, IMAGE_PIXELS), (0.0, 1.0))
LABELS_SPEC = ArraySpec("uint8", (None,), (0, 9))
NOISY_ARRAYS = ("x_train", "x_test", "x_tuning")  # the splits that get a noisy copy


@dataclass(frozen=True)
class Split:
    """Flattened images in [0, 1] and their digit labels.

    `x_tuning` are held-out training images (the last of the 60,000), for choosing the
    parameters of the classical denoisers without looking at the test set.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_tuning: np.ndarray


@dataclass(frozen=True)
class NoisySplit:
    x_train: np.ndarray
    x_test: np.ndarray
    x_tuning: np.ndarray


def load_raw(directory: str | Path) -> dict[str, np.ndarray]:
    return {
        name: load_array(Path(directory) / f"{name}.npy", spec) for name, spec in RAW_SPECS.items()
    }


def load_prepared(directory: str | Path) -> Split:
    directory = Path(directory)
    return Split(
        x_train=load_array(directory / "x_train.npy", IMAGES_SPEC),
        y_train=load_array(directory / "y_train.npy", LABELS_SPEC),
        x_test=load_array(directory / "x_test.npy", IMAGES_SPEC),
        y_test=load_array(directory / "y_test.npy", LABELS_SPEC),
        x_tuning=load_array(directory / "x_tuning.npy", IMAGES_SPEC),
    )


def load_noisy(directory: str | Path) -> NoisySplit:
    """Noisy copies of the prepared images, in the same order."""
    directory = Path(directory)
    return NoisySplit(
        *(load_array(directory / f"{name}.npy", IMAGES_SPEC) for name in NOISY_ARRAYS)
    )
