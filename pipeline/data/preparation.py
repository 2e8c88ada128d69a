"""From raw MNIST to the splits every stage uses: flattened, scaled to [0, 1], as the tutorial."""

from __future__ import annotations

import numpy as np

from pipeline.data.images import IMAGE_PIXELS, Split


def flatten_and_scale(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) -> float32 (N, 784) in [0, 1], as the tutorial's `x / 255`."""
    return (images.reshape(-1, IMAGE_PIXELS) / 255.0).astype(np.float32)


def prepare_split(
    raw: dict[str, np.ndarray], train_size: int, test_size: int, tuning_size: int
) -> Split:
    """The first `train_size` / `test_size` images, and the last `tuning_size` training images
    (held out for tuning the classical denoisers)."""
    return Split(
        x_train=flatten_and_scale(raw["x_train"][:train_size]),
        y_train=raw["y_train"][:train_size],
        x_test=flatten_and_scale(raw["x_test"][:test_size]),
        y_test=raw["y_test"][:test_size],
        x_tuning=flatten_and_scale(raw["x_train"][len(raw["x_train"]) - tuning_size :]),
    )
