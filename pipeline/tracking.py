"""MLflow tracking: where runs go, how stages of one pipeline run are grouped, lineage tags.

Default store: `mlflow.db` (SQLite) and `mlruns/` at the root of the main repository, also when
a stage runs inside a DVC queue's temporary copy (`.dvc/tmp/exps/<tmp>/`), so queued experiments
land in the same store as workspace runs. `MLFLOW_TRACKING_URI` overrides it.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from pipeline import paths, provenance
from pipeline.errors import TrackingError
from pipeline.fsutil import dvc_md5

EXPERIMENT_NAME = "autoencoder"
HEALTH_TIMEOUT_S = 3
TAG_STAGE = "dvc.stage"
TAG_GROUP = "aepipe.pipeline_run"
TAG_ROLE = "aepipe.role"
TAG_DEP = "dvc.dep."  # + path -> md5, as DVC records it
TAG_OUT = "dvc.out."  # + path -> md5, as DVC records it


def repository_root(start: Path | None = None) -> Path:
    """The main repository's root, also from inside `<root>/.dvc/tmp/exps/<tmp>/`."""
    start = (start or Path.cwd()).resolve()
    for parent in start.parents:
        if parent.name == ".dvc" and start.is_relative_to(parent / "tmp" / "exps"):
            return parent.parent
    return start


def default_store(root: Path) -> tuple[str, Path]:
    """The embedded store: a SQLite file and an artifact directory in the repository."""
    return f"sqlite:///{root / 'mlflow.db'}", root / "mlruns"


def configured_uri() -> tuple[str, Path | None]:
    """The tracking URI to use, and the artifact directory when it is the embedded store."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri, None
    return default_store(repository_root())


def ensure_reachable(uri: str) -> None:
    """Fail in seconds, naming the URI, rather than after training or minutes of retries."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S):
                return
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it "
                "(`aepipe server start`) or unset MLFLOW_TRACKING_URI to use the local store"
            ) from None
    elif uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.parent.is_dir():
            raise TrackingError(f"MLflow store {uri}: directory {database.parent} does not exist")


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT_NAME)


def tagged_md5s(tags: dict[str, str], prefix: str) -> dict[str, str]:
    """path -> md5 from the `dvc.dep.*` or `dvc.out.*` tags of a run."""
    return {
        key.removeprefix(prefix): value for key, value in tags.items() if key.startswith(prefix)
    }


def _experiment_id(client: Any, artifact_dir: Path | None) -> str:
    name = experiment_name()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_dir.as_uri() if artifact_dir else None
    return client.create_experiment(name, artifact_location=location)


def _parent_run_id(client: Any, experiment_id: str, group: str, tags: dict[str, str]) -> str:
    """The run that groups every stage of one pipeline run, created by its first stage."""
    query = f"tags.`{TAG_GROUP}` = '{group}' and tags.`{TAG_ROLE}` = 'pipeline'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    name = tags.get("dvc.exp_name") or f"repro@{tags['git.commit'][:7]}"
    shared = {k: v for k, v in tags.items() if k != TAG_STAGE and not k.startswith(TAG_DEP)}
    run = client.create_run(experiment_id, run_name=name, tags={**shared, TAG_ROLE: "pipeline"})
    return run.info.run_id


def lineage_tags(stage: str, inputs: list[Path], git: provenance.GitState) -> dict[str, str]:
    """Tags that tie a run to the code, data and DVC experiment it came from."""
    tags = {
        TAG_STAGE: stage,
        TAG_GROUP: provenance.pipeline_run_id(),
        "git.commit": git.commit,
        "git.dirty": str(git.dirty).lower(),
        "mlflow.source.git.commit": git.commit,
    }
    tags.update({f"dvc.exp_{key}": value for key, value in provenance.dvc_experiment().items()})
    tags.update(
        {f"version.{name}": version for name, version in provenance.package_versions().items()}
    )
    tags.update(output_tags(inputs, TAG_DEP))
    return tags


def output_tags(files: list[Path], prefix: str = TAG_OUT) -> dict[str, str]:
    return {f"{prefix}{path.as_posix()}": dvc_md5(path) for path in files}


class StageRun:
    """A started MLflow run for one stage; use through `stage_run`."""

    def __init__(self, mlflow: Any, run_id: str, input_md5s: dict[str, str]):
        self.mlflow = mlflow
        self.run_id = run_id
        self.input_md5s = input_md5s  # path -> md5 of each input, as DVC computes it

    def take_over(self, interrupted_run_id: str, epochs_done: int) -> None:
        """Record that this run resumes an interrupted one, and end that one as KILLED."""
        client = self.mlflow.MlflowClient()
        try:
            if client.get_run(interrupted_run_id).info.status == "RUNNING":
                client.set_terminated(interrupted_run_id, "KILLED")
        except self.mlflow.exceptions.MlflowException:
            pass  # logged to another store, or deleted
        self.mlflow.set_tags(
            {
                "aepipe.resumed_from_run": interrupted_run_id,
                "aepipe.resumed_after_epoch": epochs_done,
            }
        )

    def log_params(self, params: dict[str, Any]) -> None:
        self.mlflow.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: Path, directory: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=directory)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        self.mlflow.log_figure(figure, artifact_file)
        plt.close(figure)

    def log_keras_model(self, model: Any, example_inputs: Any, example_outputs: Any) -> None:
        """Log with MLflow's Keras flavour and a signature (name `model`)."""
        import mlflow.keras
        from mlflow.models import infer_signature

        versions = provenance.package_versions()
        mlflow.keras.log_model(
            model,
            name="model",
            signature=infer_signature(example_inputs, example_outputs),
            # Listed, not inferred: inference reloads the model in a subprocess (~10 s).
            pip_requirements=[
                f"tensorflow-cpu=={versions['tensorflow-cpu']}",
                f"keras=={versions['keras']}",
            ],
        )

    def log_outputs(self, outputs: list[Path]) -> None:
        """Tag each DVC output with its md5 and store its exact bytes under `dvc_outputs/`."""
        self.mlflow.set_tags(output_tags(outputs))
        for path in outputs:
            if path.is_dir():
                self.mlflow.log_artifacts(str(path), f"dvc_outputs/{path.as_posix()}")
            else:
                self.log_artifact(path, f"dvc_outputs/{path.parent.as_posix()}")


def store_lock() -> contextlib.AbstractContextManager:
    """Serialises check-then-write sequences on the embedded store across processes."""
    _, artifact_dir = configured_uri()
    if artifact_dir is None:
        return contextlib.nullcontext()  # a server: its database handles concurrency
    lock_dir = artifact_dir.parent / paths.STATE_DIR
    lock_dir.mkdir(exist_ok=True)
    return FileLock(lock_dir / "mlflow.lock")


@contextlib.contextmanager
def stage_run(stage: str, inputs: list[Path]) -> Iterator[StageRun]:
    """Open the MLflow run of `stage`, nested under its pipeline run, tagged with lineage.

    Ends it FINISHED, FAILED (an exception) or KILLED (Ctrl-C / SIGTERM), never left RUNNING.
    """
    uri, artifact_dir = configured_uri()
    ensure_reachable(uri)
    import mlflow  # imported here: 1-2 s, and only stages that log need it

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    git = provenance.git_state()
    tags = lineage_tags(stage, inputs, git)
    try:
        with store_lock():  # the first use creates the SQLite schema; queue workers must wait
            experiment_id = _experiment_id(client, artifact_dir)
            parent_id = _parent_run_id(client, experiment_id, tags[TAG_GROUP], tags)
    except Exception as exc:
        raise TrackingError(f"MLflow store {uri} is not usable: {exc}") from None
    tags["mlflow.parentRunId"] = parent_id
    run = mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags)
    status = "FAILED"
    try:
        if git.diff:  # the commit alone does not say which code ran
            mlflow.log_text(git.diff, "lineage/uncommitted.diff")
        yield StageRun(mlflow, run.info.run_id, tagged_md5s(tags, TAG_DEP))
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        mlflow.end_run(status)
        client.set_terminated(parent_id, status)


class RunFinder:
    """Read-only lookups in the MLflow store; never creates one."""

    def __init__(self, client: Any, experiment_id: str, uri: str):
        self.client = client
        self.experiment_id = experiment_id
        self.uri = uri

    @classmethod
    def open_existing(cls) -> RunFinder | None:
        """The configured store, or None if the embedded store was never created."""
        uri, _ = configured_uri()
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            return None
        ensure_reachable(uri)
        import mlflow

        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(experiment_name())
        return cls(client, experiment.experiment_id, uri) if experiment else None

    def producing(self, path: str, md5: str) -> list[dict[str, str]]:
        """Summaries of the runs tagged as having produced `path` with this md5, newest first."""
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
        except mlflow.exceptions.MlflowException:
            raise TrackingError(f"no MLflow run {run_id!r} in {self.uri}") from None
        outputs = tagged_md5s(run.data.tags, TAG_OUT)
        return {**self.summary(run), "link": self.link(run_id), "outputs": outputs}

    def logged_model(self, run_id: str) -> Any | None:
        """The model that run `run_id` logged with MLflow's Keras flavour, if any."""
        import mlflow

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
        """Where to open the run: the server's page, or the page of `make ui`."""
        base = self.uri if self.uri.startswith("http") else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
