"""Stage `noise`: x + factor * N(0, 1), clipped to [0, 1], each split from its own seeded stream."""

from __future__ import annotations

from pipeline.core import paths
from pipeline.core.config import Params
from pipeline.core.entry import stage_main
from pipeline.data.arrays import save_arrays
from pipeline.data.images import load_prepared
from pipeline.data.noise import noisy_copies


def run(params: Params) -> None:
    split = load_prepared(paths.PREPARED_DIR)
    noisy = noisy_copies(split, params.noise.factor, params.noise.seed)
    save_arrays(paths.NOISY_DIR, noisy)
    print(f"noise: factor {params.noise.factor}, seed {params.noise.seed} -> {paths.NOISY_DIR}/")


if __name__ == "__main__":
    raise SystemExit(stage_main("noise", run))
