"""Stage `prepare`: the first `data.train_size` / `data.test_size` images, flattened, in [0, 1]."""

from __future__ import annotations

import numpy as np

from pipeline import paths
from pipeline.arrays import save_arrays
from pipeline.config import Params
from pipeline.datasets import IMAGE_PIXELS, Split, load_raw
from pipeline.stages.fetch import verify_mnist


def flatten_and_scale(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) -> float32 (N, 784) in [0, 1], as the tutorial's `x / 255`."""
    return (images.reshape(-1, IMAGE_PIXELS) / 255.0).astype(np.float32)


def prepare_split(
    raw: dict[str, np.ndarray], train_size: int, test_size: int, tuning_size: int
) -> Split:
    return Split(
        x_train=flatten_and_scale(raw["x_train"][:train_size]),
        y_train=raw["y_train"][:train_size],
        x_test=flatten_and_scale(raw["x_test"][:test_size]),
        y_test=raw["y_test"][:test_size],
        x_tuning=flatten_and_scale(raw["x_train"][len(raw["x_train"]) - tuning_size :]),
    )


def run(params: Params) -> None:
    raw = load_raw(paths.RAW_DIR)
    verify_mnist(raw, str(paths.RAW_DIR))
    split = prepare_split(
        raw, params.data.train_size, params.data.test_size, params.data.tuning_size
    )
    save_arrays(paths.PREPARED_DIR, vars(split))
    print(
        f"prepare: {len(split.x_train)} train, {len(split.x_test)} test images "
        f"-> {paths.PREPARED_DIR}/"
    )
