"""Stage `prepare`: the first `data.train_size` / `data.test_size` images, flattened, in [0, 1]."""

from __future__ import annotations

from pipeline.core import paths
from pipeline.core.config import Params
from pipeline.core.entry import stage_main
from pipeline.data.arrays import save_arrays
from pipeline.data.images import load_raw
from pipeline.data.mnist import verify_mnist
from pipeline.data.preparation import prepare_split


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


if __name__ == "__main__":
    raise SystemExit(stage_main("prepare", run))
