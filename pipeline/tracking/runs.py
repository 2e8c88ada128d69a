"""The MLflow run of each stage: nested under one run per `dvc repro` / `dvc exp run`, tagged
with the lineage (git commit, md5 of every input and output as `dvc.lock` records it, DVC
experiment) that joins it to `dvc.lock`; and the runs a killed process left RUNNING.

`RunLogger` makes the MLflow calls of one stage's run. It lives in the stage's recorder process
(`tracking.recorder`), which the stage talks to through its `StageRun`."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import psutil

from pipeline import modelling
from pipeline.core import interrupts, paths, processes
from pipeline.core.config import Params, flatten
from pipeline.core.files import dvc_md5
from pipeline.tracking import provenance
from pipeline.tracking.store import (
    configured_uri,
    experiment_name,
    has_running_runs,
    open_client,
    store_errors,
    store_lock,
)
from pipeline.tracking.tags import (
    SWEEP_RUN_ENV,
    TAG_DEP,
    TAG_GROUP,
    TAG_OUT,
    TAG_PROCESS,
    TAG_RECORDER,
    TAG_REPLICATE_GROUP,
    TAG_REPOSITORY,
    TAG_ROLE,
    TAG_STAGE,
    TAG_SWEEP,
    recorded_training_code,
    replicate_group,
    tagged_md5s,
)

# The `dvc repro` / `dvc exp run` process, as the stage sees it, for its pipeline run's tags.
TAG_GROUP_PROCESS = "aepipe.pipeline_process"
TAG_ENDED_BY = "aepipe.ended_by"  # on a run that its own stage could not end

# Opens the project's experiment on MLflow's model-training view, not the GenAI overview.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def project_experiment_id(client: Any, artifact_dir: Path | None) -> str:
    name = experiment_name()
    kind_tag, kind = EXPERIMENT_KIND
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if kind_tag not in experiment.tags:  # a kind the user chose stays
            client.set_experiment_tag(experiment.experiment_id, kind_tag, kind)
        return experiment.experiment_id
    location = artifact_dir.as_uri() if artifact_dir else None
    return client.create_experiment(name, artifact_location=location, tags={kind_tag: kind})


def _parent_run_id(
    client: Any, experiment_id: str, group: str, tags: dict[str, str], pipeline_identity: str
) -> str:
    """The run that groups every stage of one pipeline run, created by its first stage."""
    query = f"tags.`{TAG_GROUP}` = '{group}' and tags.`{TAG_ROLE}` = 'pipeline'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    name = tags.get("dvc.exp_name") or f"repro@{tags['git.commit'][:7]}"
    shared = {k: v for k, v in tags.items() if k != TAG_STAGE and not k.startswith(TAG_DEP)}
    shared[TAG_PROCESS] = pipeline_identity
    if sweep := tags.get(TAG_SWEEP):  # a cell of `aepipe sweep`: nested under the sweep's run
        shared["mlflow.parentRunId"] = sweep
    run = client.create_run(experiment_id, run_name=name, tags={**shared, TAG_ROLE: "pipeline"})
    return run.info.run_id


def orphaned_runs(client: Any, experiment_id: str) -> list[Any]:
    """The RUNNING runs of this repository whose process has ended (a SIGKILL, a crash, a closed
    terminal, a store that was gone when the run should have ended), and whose recorder has
    ended too (it may still be ending the run with the status the stage sent it). Runs of
    processes on other machines are not judged: nothing here can tell whether they still run."""
    repository = str(paths.repository_root())
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    return [
        run
        for run in running
        if run.data.tags.get(TAG_REPOSITORY) == repository
        and processes.process_gone(run.data.tags.get(TAG_PROCESS, ""))
        and not _still_running(run.data.tags.get(TAG_RECORDER, ""))
    ]


def _still_running(identity: str) -> bool:
    return bool(identity) and not processes.process_gone(identity)


def end_orphaned_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the `orphaned_runs` and the pipeline runs above them; return their ids."""
    ended = []
    for run in orphaned_runs(client, experiment_id):
        client.set_tag(run.info.run_id, TAG_ENDED_BY, "a later stage: process gone")
        client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
        if parent := run.data.tags.get("mlflow.parentRunId"):  # its pipeline run did not finish
            client.set_terminated(parent, "KILLED")
    return ended


def workspace_training_code() -> str | None:
    """`tags.training_code` of the training stages as this directory's dvc.lock records them
    (DVC updates it after each stage, so `evaluate` and `register` see the models' code)."""
    import yaml

    try:
        lock = yaml.safe_load(Path("dvc.lock").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return recorded_training_code(lock) if isinstance(lock, dict) else None


def sweep_orphaned_runs() -> list[str]:
    """`end_orphaned_runs` in the configured store, if it exists. On the embedded store with no
    RUNNING run (the usual case) this costs one read-only query and no MLflow import."""
    uri, _ = configured_uri()
    if uri.startswith("sqlite:///") and not has_running_runs(Path(uri.removeprefix("sqlite:///"))):
        return []
    from pipeline.tracking.finder import RunFinder

    runs = RunFinder.open_existing()
    if runs is None:
        return []
    with store_errors(runs.uri), interrupts.held():
        return end_orphaned_runs(runs.client, runs.experiment_id)


def lineage_tags(
    stage: str, inputs: list[Path], git: provenance.GitState, params: Params
) -> dict[str, str]:
    """Tags that tie a run to the code, data, params and DVC experiment it came from, and to the
    process that runs it (so a later stage can tell that a RUNNING run's process has died)."""
    tags = {
        TAG_STAGE: stage,
        TAG_GROUP: processes.pipeline_run_id(),
        TAG_REPLICATE_GROUP: replicate_group(params.flat()),
        TAG_PROCESS: processes.process_identity(psutil.Process()),
        TAG_REPOSITORY: str(paths.repository_root()),
        "git.commit": git.commit,
        "git.dirty": str(git.dirty).lower(),
        "mlflow.source.git.commit": git.commit,
    }
    tags.update({f"dvc.exp_{key}": value for key, value in provenance.dvc_experiment().items()})
    if sweep := os.environ.get(SWEEP_RUN_ENV):
        tags[TAG_SWEEP] = sweep
    tags.update(
        {f"version.{name}": version for name, version in provenance.package_versions().items()}
    )
    tags.update(output_tags(inputs, TAG_DEP))
    return tags


def output_tags(files: list[Path], prefix: str = TAG_OUT) -> dict[str, str]:
    return {f"{prefix}{path.as_posix()}": dvc_md5(path) for path in files}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class RunLogger:
    """The MLflow calls of one stage's run, made in its recorder process: `open` starts the run
    (nested under its pipeline run), the logging methods are what the stage queues, `end` ends
    the run and its pipeline run."""

    def __init__(self, mlflow: Any, uri: str, parent_id: str, run_id: str, tags: dict[str, str]):
        self.mlflow = mlflow
        self.client = mlflow.MlflowClient()
        self.uri, self.parent_id, self.run_id = uri, parent_id, run_id
        self.input_md5s = tagged_md5s(tags, TAG_DEP)  # path -> md5 of each input, as DVC has it

    @classmethod
    def open(cls, stage: str, tags: dict[str, str], diff: str | None) -> RunLogger:
        uri, artifact_dir = configured_uri()
        import mlflow  # 1-2 s, and only stages that log need it

        mlflow.set_tracking_uri(uri)
        tags = dict(tags)
        pipeline_identity = tags.pop(TAG_GROUP_PROCESS)
        tags[TAG_RECORDER] = processes.process_identity(psutil.Process())
        with store_errors(uri):
            client = open_client(uri)
            with store_lock():
                experiment_id = project_experiment_id(client, artifact_dir)
                end_orphaned_runs(client, experiment_id)
                parent_id = _parent_run_id(
                    client, experiment_id, tags[TAG_GROUP], tags, pipeline_identity
                )
            # Running again while this stage runs (the previous stage ended it): a pipeline
            # killed before its next stage opens a run is then not left looking FINISHED.
            client.update_run(parent_id, status="RUNNING")
            tags["mlflow.parentRunId"] = parent_id
            run = mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags)
            if diff:  # the commit alone does not say which code ran
                mlflow.log_text(diff, "lineage/uncommitted.diff")
        return cls(mlflow, uri, parent_id, run.info.run_id, tags)

    def prepare(self) -> None:
        """Import what logging a model and finding logged models need (2-3 s, so that the
        stage's last calls do not wait for it)."""
        import mlflow.models
        import mlflow.pyfunc  # noqa: F401

        import pipeline.tracking.finder  # noqa: F401

    def tag_ended_by(self, reason: str) -> None:
        """Say on the run and its pipeline run who ended them, when the stage could not."""
        with contextlib.suppress(Exception):
            for run_id in (self.run_id, self.parent_id):
                self.client.set_tag(run_id, TAG_ENDED_BY, reason)

    def end(self, status: str) -> None:
        """End the run and its pipeline run with `status` (FINISHED, FAILED or KILLED)."""
        with store_errors(self.uri):
            self.mlflow.end_run(status)
            self.client.set_terminated(self.parent_id, status)

    @interrupts.held()
    def take_over(self, interrupted_run_id: str, epochs_done: int) -> None:
        """Record that this run resumes an interrupted one, and end that one as KILLED."""
        try:
            if self.client.get_run(interrupted_run_id).info.status == "RUNNING":
                self.client.set_terminated(interrupted_run_id, "KILLED")
        except self.mlflow.exceptions.MlflowException:
            pass  # logged to another store, or deleted
        self.mlflow.set_tags(
            {
                "aepipe.resumed_from_run": interrupted_run_id,
                "aepipe.resumed_after_epoch": epochs_done,
            }
        )

    @interrupts.held()
    def log_params(self, params: dict[str, Any]) -> None:
        self.mlflow.log_params(params)

    @interrupts.held()
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    @interrupts.held()
    def set_tags(self, tags: dict[str, str]) -> None:
        self.mlflow.set_tags(tags)

    @interrupts.held()
    def log_metric_tree(self, tree: dict, model_files: dict[str, Path] | None = None) -> None:
        """The numeric leaves of a nested dict (metrics.json), with dotted keys. The leaves under
        a key of `model_files` are logged as metrics of the logged model of that file too, so
        MLflow's models page ranks the models by them."""
        model_ids = self.logged_model_ids(model_files or {})
        for group, subtree in tree.items():
            leaves = (
                flatten(subtree, f"{group}.") if isinstance(subtree, dict) else {group: subtree}
            )
            numbers = {key: float(value) for key, value in leaves.items() if _is_number(value)}
            if numbers:
                self.mlflow.log_metrics(numbers, model_id=model_ids.get(group))

    def logged_model_ids(self, files: dict[str, Path]) -> dict[str, str]:
        """key -> id of the logged MLflow model whose `.keras` file is `files[key]` (by md5), for
        the inputs that a run in this store logged."""
        from pipeline.tracking.finder import RunFinder

        if not files:
            return {}
        runs = RunFinder.open_existing()
        if runs is None:
            return {}
        found = {}
        for key, path in files.items():
            md5 = self.input_md5s.get(path.as_posix())
            producing = runs.producing(path.as_posix(), md5) if md5 else []
            model = runs.logged_model(producing[0]["run_id"]) if producing else None
            if model is not None:
                found[key] = model.model_id
        return found

    @interrupts.held()
    def log_artifact(self, path: Path, directory: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=directory)

    @interrupts.held()
    def log_directory(self, directory: Path, artifact_path: str) -> None:
        self.mlflow.log_artifacts(str(directory), artifact_path)

    @interrupts.held()
    def log_model_file(self, model_file: Path, example_inputs: Any, example_outputs: Any) -> None:
        """Log the `.keras` file as an MLflow model named after it (`basic`, `denoise`; pyfunc,
        with a signature) that loads and serves without this project (`modelling/served.py`)."""
        from mlflow.models import infer_signature

        code = Path(modelling.__file__).parent
        versions = provenance.package_versions()
        with warnings.catch_warnings():  # the signature is given; an example would cost a reload
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            self.mlflow.pyfunc.log_model(
                name=model_file.stem,
                python_model=str(code / "served.py"),
                artifacts={"keras_model": str(model_file)},
                code_paths=[str(code / "variational.py")],
                signature=infer_signature(example_inputs, example_outputs),
                # Listed, not inferred: inference reloads the model in a subprocess (~10 s).
                pip_requirements=[
                    f"{name}=={versions[name]}"
                    for name in ("mlflow", "tensorflow-cpu", "keras", "numpy")
                ],
            )

    @interrupts.held()
    def log_outputs(self, outputs: list[Path]) -> None:
        """Tag each DVC output with its md5 and store its exact bytes under `dvc_outputs/`."""
        self.mlflow.set_tags(output_tags(outputs))
        for path in outputs:
            if path.is_dir():
                self.mlflow.log_artifacts(str(path), f"dvc_outputs/{path.as_posix()}")
            else:
                self.log_artifact(path, f"dvc_outputs/{path.parent.as_posix()}")
