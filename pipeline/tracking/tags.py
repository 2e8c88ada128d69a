"""The tags that join an MLflow run to `dvc.lock` and to the other stages of its pipeline run."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipeline.core.paths import TRAINING_STAGES

TAG_STAGE = "dvc.stage"
TAG_GROUP = "aepipe.pipeline_run"
TAG_ROLE = "aepipe.role"
TAG_PROCESS = "aepipe.process"  # host:pid:start time of the process the run belongs to
TAG_RECORDER = "aepipe.recorder"  # the same, of the recorder process that logs a stage's run
TAG_REPOSITORY = "aepipe.repository"  # the main repository, also for queued experiments
TAG_DEP = "dvc.dep."  # + path -> md5, as DVC records it
TAG_OUT = "dvc.out."  # + path -> md5, as DVC records it
TAG_REPLICATE_GROUP = "aepipe.replicate_group"  # the same for runs that differ only in `seed`
TAG_BENCHMARK = "aepipe.benchmark"  # on evaluate runs: the test their scores were measured on
TAG_ROLE_COMPARISON = "comparison"  # `aepipe compare --log`
TAG_ROLE_SWEEP = "sweep"  # the parent run of an `aepipe sweep`
TAG_SWEEP = "aepipe.sweep"  # on every run of a sweep's cells: the sweep's parent run
SWEEP_RUN_ENV = "AEPIPE_SWEEP_RUN"  # how a cell's stages learn that run's id


TAG_TRAINING_CODE = "aepipe.training_code"  # md5s of the code the models were trained with

# Params that do not change what a run measures, so runs differing in them are replicates of one
# configuration: the seed; how many images the figures show; where MNIST came from (the arrays
# are checked against the published hashes); multi-worker training (the same losses up to float
# rounding).
NOT_CONFIGURATION = frozenset(
    {"seed", "evaluate.n_examples", "data.source", "distribute.strategy", "distribute.workers"}
)


def _digest(mapping: dict[str, Any]) -> str:
    text = json.dumps({key: str(value) for key, value in mapping.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def replicate_group(flat_params: dict[str, Any]) -> str:
    """A stable id of a configuration: the params in it, each value as MLflow logs it (`str`), so
    the id computed from a run's logged params equals the one it was tagged with."""
    return _digest({k: v for k, v in flat_params.items() if k not in NOT_CONFIGURATION})


def training_code(code_md5s: dict[str, Any]) -> str:
    """A stable id of the code the models were trained with: path -> md5 of the training stages'
    code deps, as dvc.lock records them (or as DVC's experiment table shows them)."""
    return _digest(code_md5s)


def recorded_training_code(lock: dict[str, Any]) -> str | None:
    """`training_code` of a parsed dvc.lock, or None before both training stages ran."""
    md5s = {}
    for stage in TRAINING_STAGES:
        body = lock.get("stages", {}).get(stage)
        if body is None:
            return None
        for dep in body.get("deps", []):
            if str(dep.get("path", "")).startswith("pipeline/"):
                md5s[dep["path"]] = dep.get("md5")
    return training_code(md5s)


def tagged_md5s(tags: dict[str, str], prefix: str) -> dict[str, str]:
    """path -> md5 from the `dvc.dep.*` or `dvc.out.*` tags of a run."""
    return {
        key.removeprefix(prefix): value for key, value in tags.items() if key.startswith(prefix)
    }
