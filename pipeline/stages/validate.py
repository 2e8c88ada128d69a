"""Stage `validate`: params.yaml against the schema, on every edit of it.

A mistyped key that no other stage reads (`-S +train_basic.epoch=5`) still fails the run here.
As the first stage of every run, it also ends the MLflow runs a killed process left RUNNING, even
when DVC then restores every other stage from its run cache.
"""

from __future__ import annotations

from pipeline.core.config import Params
from pipeline.core.entry import stage_main
from pipeline.tracking.runs import sweep_orphaned_runs


def run(params: Params) -> None:
    print(f"validate: params valid ({len(params.flat())} params)")
    if ended := sweep_orphaned_runs():
        print(f"validate: marked KILLED {len(ended)} MLflow run(s) whose process had ended")


if __name__ == "__main__":
    raise SystemExit(stage_main("validate", run))
