"""The tags that join an MLflow run to `dvc.lock` and to the other stages of its pipeline run."""

from __future__ import annotations

import hashlib
import json
from typing import Any

TAG_STAGE = "dvc.stage"
TAG_GROUP = "aepipe.pipeline_run"
TAG_ROLE = "aepipe.role"
TAG_PROCESS = "aepipe.process"  # host:pid:start time of the process the run belongs to
TAG_REPOSITORY = "aepipe.repository"  # the main repository, also for queued experiments
TAG_DEP = "dvc.dep."  # + path -> md5, as DVC records it
TAG_OUT = "dvc.out."  # + path -> md5, as DVC records it
TAG_REPLICATE_GROUP = "aepipe.replicate_group"  # the same for runs that differ only in `seed`
TAG_BENCHMARK = "aepipe.benchmark"  # on evaluate runs: the test their scores were measured on
TAG_ROLE_COMPARISON = "comparison"  # `aepipe compare --log`


def replicate_group(flat_params: dict[str, Any]) -> str:
    """A stable id of a configuration: every param but `seed`, each value as MLflow logs it
    (`str`), so the id computed from a run's logged params equals the one it was tagged with."""
    configuration = {key: str(value) for key, value in flat_params.items() if key != "seed"}
    text = json.dumps(configuration, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tagged_md5s(tags: dict[str, str], prefix: str) -> dict[str, str]:
    """path -> md5 from the `dvc.dep.*` or `dvc.out.*` tags of a run."""
    return {
        key.removeprefix(prefix): value for key, value in tags.items() if key.startswith(prefix)
    }
