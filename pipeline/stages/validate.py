"""Stage `validate`: params.yaml against the schema, on every edit of it.

A mistyped key that no other stage reads (`-S +train_basic.epoch=5`) still fails the run here.
"""

from __future__ import annotations

from pipeline.core.config import Params
from pipeline.core.entry import stage_main


def run(params: Params) -> None:
    print(f"validate: params valid ({len(params.flat())} params)")


if __name__ == "__main__":
    raise SystemExit(stage_main("validate", run))
