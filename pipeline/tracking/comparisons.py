"""`aepipe compare --log`: a comparison stored as an MLflow run of its own, tagged with the
experiments it compared, its tables and figure as artifacts."""

from __future__ import annotations

from pathlib import Path

from pipeline.tracking.finder import RunFinder
from pipeline.tracking.runs import project_experiment_id
from pipeline.tracking.store import (
    configured_uri,
    ensure_reachable,
    open_client,
    store_errors,
    store_lock,
)
from pipeline.tracking.tags import TAG_ROLE, TAG_ROLE_COMPARISON

MAX_TAG_LENGTH = 5000  # MLflow's limit for a tag value


def log_comparison(files: list[Path], experiments: list[str], baseline: str) -> str:
    """Log `files` under `comparison/` in a new run; return the run's link."""
    uri, artifact_dir = configured_uri()
    ensure_reachable(uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    with store_errors(uri):
        client = open_client(uri)
        with store_lock():
            experiment_id = project_experiment_id(client, artifact_dir)
        tags = {
            TAG_ROLE: TAG_ROLE_COMPARISON,
            "aepipe.compared": " ".join(experiments)[:MAX_TAG_LENGTH],
            "aepipe.baseline": baseline[:MAX_TAG_LENGTH],
        }
        run = client.create_run(experiment_id, run_name="compare", tags=tags)
        for path in files:
            client.log_artifact(run.info.run_id, str(path), "comparison")
        client.set_terminated(run.info.run_id, "FINISHED")
    return RunFinder(client, experiment_id, uri).link(run.info.run_id)
