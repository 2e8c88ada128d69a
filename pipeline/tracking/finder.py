"""Read-only lookups in the MLflow store: which runs produced an output, a run's summary, the model
a run logged. Never creates a store."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pipeline.core.errors import TrackingError, one_line
from pipeline.tracking.store import (
    configured_uri,
    corrupted_store,
    ensure_reachable,
    experiment_name,
    mlflow_tables_in,
    store_errors,
)
from pipeline.tracking.tags import TAG_GROUP, TAG_OUT, TAG_STAGE, tagged_md5s

SAFE_PATH = re.compile(r"[\w./-]+")  # the paths dvc.lock records for this pipeline
MD5 = re.compile(r"[0-9a-f]{32}(\.dir)?")
RUN_ID = re.compile(r"[0-9a-f]{32}")
UI_ENV = "AEPIPE_UI"  # where the UI over a local store answers (`make ui` sets it)
DEFAULT_UI = "http://127.0.0.1:5000"


class RunFinder:
    """Read-only lookups in the MLflow store; never creates one."""

    SAFE_TEXT = re.compile(r"[\w./@-]+")  # what fits in a search filter as it is

    def __init__(self, client: Any, experiment_id: str, uri: str):
        self.client = client
        self.experiment_id = experiment_id
        self.uri = uri

    @classmethod
    def open_existing(cls) -> RunFinder | None:
        """The configured store, or None if the embedded store was never created."""
        uri, artifact_dir = configured_uri()
        ensure_reachable(uri)
        if uri.startswith("sqlite:///"):
            database = Path(uri.removeprefix("sqlite:///"))
            if not database.is_file() or not database.stat().st_size:
                if artifact_dir is not None:  # the embedded store: a fresh clone has none yet
                    return None
                raise TrackingError(
                    f"MLFLOW_TRACKING_URI={uri}: no MLflow store there (no such file, or an "
                    "empty one); check the path"
                )
            if not mlflow_tables_in(database):  # never let a lookup create a schema
                raise TrackingError(corrupted_store(uri, "a SQLite file without MLflow's tables"))
        import mlflow

        mlflow.set_tracking_uri(uri)
        with store_errors(uri):
            client = mlflow.MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(experiment_name())
        return cls(client, experiment.experiment_id, uri) if experiment else None

    def producing(self, path: str, md5: str) -> list[dict[str, str]]:
        """Summaries of the runs tagged as having produced `path` with this md5, newest first."""
        if not SAFE_PATH.fullmatch(path) or not MD5.fullmatch(md5):
            return []  # no run is tagged so; and it would not fit in a search filter
        with store_errors(self.uri):
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_OUT}{path}` = '{md5}'",
                order_by=["attributes.start_time DESC"],
            )
        return [{**self.summary(run), "link": self.link(run.info.run_id)} for run in found]

    def run(self, run_id: str) -> dict[str, Any]:
        import mlflow

        try:
            run = self.client.get_run(run_id)
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise TrackingError(corrupted_store(self.uri, one_line(exc))) from None
            raise TrackingError(f"no MLflow run {run_id!r} in {self.uri}") from None
        outputs = tagged_md5s(run.data.tags, TAG_OUT)
        return {**self.summary(run), "link": self.link(run_id), "outputs": outputs}

    def logged_model(self, run_id: str) -> Any | None:
        """The MLflow model that run `run_id` logged, if any."""
        import mlflow

        if not RUN_ID.fullmatch(run_id):
            return None
        with store_errors(self.uri):
            models = mlflow.search_logged_models(
                experiment_ids=[self.experiment_id],
                filter_string=f"source_run_id = '{run_id}'",
                output_format="list",
            )
        return models[0] if models else None

    @staticmethod
    def summary(run: Any) -> dict[str, str]:
        tags = run.data.tags
        return {
            "run_id": run.info.run_id,
            "stage": tags.get(TAG_STAGE, ""),
            "status": run.info.status,
            "git_commit": tags.get("git.commit", ""),
            "git_dirty": tags.get("git.dirty", ""),
            "dvc_experiment": tags.get("dvc.exp_name", ""),
            "pipeline_run": tags.get(TAG_GROUP, ""),
        }

    def link(self, run_id: str) -> str:
        """Where to open the run, in MLflow's model-training view (its UI opens on the GenAI
        view otherwise): on the tracking server, or for a local store on `AEPIPE_UI` (the
        address of `make ui`)."""
        base = self.uri if self.uri.startswith("http") else os.environ.get(UI_ENV) or DEFAULT_UI
        return (
            f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
            "?workflowType=machine_learning"
        )
