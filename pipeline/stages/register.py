"""Stage `register`: the denoiser becomes a new version in the MLflow model registry, with its
lineage tags; the champion alias of its benchmark moves to it only when its gain is beyond seed
noise (`tracking.registry`).

The registry lives outside the workspace, so the stage also writes
`reports/registry_candidate.json`: what it put to the registry (model md5, score, benchmark,
alias). Without an output, DVC would skip the stage in a fresh clone whose inputs match
`dvc.lock`, and the new registry would stay empty. The file holds only what the inputs
determine; the registry's answer (which version, if any) is printed and kept in MLflow. It is a
`persist` output in `dvc.yaml`, which keeps the stage out of DVC's run cache: a receipt restored
from the cache would claim a registration that never happened in this store. `aepipe verify`
checks the registry against it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pipeline.core import params_guard, paths, progress
from pipeline.core.config import Params
from pipeline.core.entry import stage_main
from pipeline.core.errors import DataError, TrackingError
from pipeline.core.files import dvc_md5, write_json_atomic
from pipeline.evaluation.benchmark import NOISY_SCORE, SCORE, benchmark_name
from pipeline.tracking import registry
from pipeline.tracking.finder import RunFinder
from pipeline.tracking.runs import sweep_orphaned_runs, workspace_training_code
from pipeline.tracking.tags import replicate_group

DENOISER = paths.model_file("denoise")


def _metric(metrics: dict[str, Any], dotted: str) -> float:
    group, name = dotted.split(".")
    try:
        value = float(metrics[group][name])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{paths.METRICS_FILE}: no {dotted}; rerun `dvc repro evaluate`") from None
    if not math.isfinite(value):
        raise DataError(f"{paths.METRICS_FILE}: {dotted} is {value}, not a score")
    return value


def run(params: Params) -> None:
    try:
        metrics = json.loads(paths.METRICS_FILE.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{paths.METRICS_FILE}: unreadable ({exc})") from None
    candidate = registry.Candidate(
        path=DENOISER.as_posix(),
        md5=dvc_md5(DENOISER),
        score=_metric(metrics, SCORE),
        group=replicate_group(params.flat()),
        code=workspace_training_code() or "unknown",
        benchmark=benchmark_name(params),
        tags={
            "denoiser_on_noisy.ssim": str(_metric(metrics, "denoiser_on_noisy.ssim")),
            "model.kind": params.model.kind,
        },
        floor=_metric(metrics, NOISY_SCORE),
    )
    runs = RunFinder.open_existing()
    if runs is None:
        raise TrackingError(f"no MLflow store with runs: nothing records {DENOISER} to register")
    sweep_orphaned_runs()
    alias = registry.champion_alias(params)
    params_guard.unchanged()  # the metrics are of the params this run began with
    outcome = registry.register(runs, candidate, alias, progress.printer("register"))
    receipt = {
        "model": registry.MODEL_NAME,
        "alias": alias,
        "benchmark": candidate.benchmark,
        SCORE: candidate.score,
        candidate.path: candidate.md5,
    }
    write_json_atomic(paths.REGISTRY_RECEIPT, receipt)
    print(f"register: {outcome}")


if __name__ == "__main__":
    raise SystemExit(stage_main("register", run))
