"""The tags that join an MLflow run to `dvc.lock` and to the other stages of its pipeline run."""

from __future__ import annotations

TAG_STAGE = "dvc.stage"
TAG_GROUP = "aepipe.pipeline_run"
TAG_ROLE = "aepipe.role"
TAG_PROCESS = "aepipe.process"  # host:pid:start time of the process the run belongs to
TAG_REPOSITORY = "aepipe.repository"  # the main repository, also for queued experiments
TAG_DEP = "dvc.dep."  # + path -> md5, as DVC records it
TAG_OUT = "dvc.out."  # + path -> md5, as DVC records it


def tagged_md5s(tags: dict[str, str], prefix: str) -> dict[str, str]:
    """path -> md5 from the `dvc.dep.*` or `dvc.out.*` tags of a run."""
    return {
        key.removeprefix(prefix): value for key, value in tags.items() if key.startswith(prefix)
    }
