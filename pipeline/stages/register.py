"""Stage `register`: the denoiser becomes a new version in the MLflow model registry, with its
lineage tags; the champion alias of its benchmark moves to it only when its gain is beyond seed
noise (`tracking.registry`).

The registry lives outside the workspace, so the stage also writes
`reports/registry_candidate.json`: what it put to the registry (model md5, score, alias). Without
an output, DVC would skip the stage in a fresh clone whose inputs match `dvc.lock`, and the new
registry would stay empty. The file holds only what the inputs determine; the registry's answer
(which version, if any) is printed and kept in MLflow.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.core import paths
from pipeline.core.config import Params
from pipeline.core.entry import stage_main
from pipeline.core.errors import DataError, TrackingError
from pipeline.core.files import dvc_md5, write_json_atomic
from pipeline.evaluation.benchmark import SCORE, benchmark_name
from pipeline.tracking import registry
from pipeline.tracking.finder import RunFinder
from pipeline.tracking.runs import sweep_orphaned_runs, workspace_training_code
from pipeline.tracking.tags import replicate_group

DENOISER = paths.model_file("denoise")


def _metric(metrics: dict[str, Any], dotted: str) -> float:
    group, name = dotted.split(".")
    try:
        return float(metrics[group][name])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{paths.METRICS_FILE}: no {dotted}; rerun `dvc repro evaluate`") from None


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
    )
    runs = RunFinder.open_existing()
    if runs is None:
        raise TrackingError(f"no MLflow store with runs: nothing records {DENOISER} to register")
    sweep_orphaned_runs()
    alias = registry.champion_alias(params)
    outcome = registry.register(runs, candidate, alias)
    receipt = {
        "model": registry.MODEL_NAME,
        "alias": alias,
        SCORE: candidate.score,
        candidate.path: candidate.md5,
    }
    write_json_atomic(paths.REGISTRY_RECEIPT, receipt)
    print(f"register: {outcome}")


if __name__ == "__main__":
    raise SystemExit(stage_main("register", run))
