"""`aepipe verify`: re-hash what `dvc.lock` and MLflow claim, and list every mismatch.

Checked: each output recorded in the workspace `dvc.lock` exists with its md5; each stage's
inputs and params still match what the stage ran on (else its outputs are stale); for each
output logged to MLflow, the newest run that claims it stored exactly those bytes, both the
`dvc_outputs/` copy and, for models, the file inside the logged MLflow model; that the model the
register stage's receipt names is in the registry on its benchmark; and that no run was left
RUNNING by a process that has ended.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.audit.lineage import WORKSPACE, LockHistory, StageRecord
from pipeline.core import paths
from pipeline.core.config import flatten, read_yaml
from pipeline.core.errors import ParamsError, one_line
from pipeline.core.files import dvc_md5
from pipeline.tracking.finder import RunFinder
from pipeline.tracking.runs import orphaned_runs
from pipeline.tracking.store import store_errors

STAGES_LOGGED_TO_MLFLOW = (*paths.TRAINING_STAGES, "evaluate")


@dataclass(frozen=True)
class Finding:
    ok: bool
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{'ok     ' if self.ok else 'PROBLEM'}  {self.subject}: {self.message}"


Md5Of = Callable[[str], str | None]  # a path in the repository -> its md5, None if missing


def md5s_under(root: Path) -> Md5Of:
    """Md5 of each path once per check: stages share inputs (data/prepared feeds five)."""

    @functools.cache
    def md5_of(path: str) -> str | None:
        return dvc_md5(root / path) if (root / path).exists() else None

    return md5_of


def check_outputs(record: StageRecord, md5_of: Md5Of) -> list[Finding]:
    findings = []
    for path, recorded in record.outs.items():
        actual = md5_of(path)
        if actual is None:
            findings.append(Finding(False, path, f"missing (dvc.lock records {recorded})"))
        elif actual != recorded:
            findings.append(
                Finding(
                    False,
                    path,
                    f"md5 {actual} differs from {recorded} in "
                    f"dvc.lock: changed after stage {record.stage} wrote it",
                )
            )
        else:
            findings.append(Finding(True, path, f"md5 {actual} as in dvc.lock"))
    return findings


def check_inputs(record: StageRecord, md5_of: Md5Of, params: dict) -> list[Finding]:
    """Inputs or params that changed since the stage ran make its outputs stale."""
    changed = [
        f"{path} (md5 {md5_of(path)}, ran on {md5})"
        for path, md5 in record.deps.items()
        if md5_of(path) != md5
    ]
    changed += [
        f"param {key} = {params.get(key)!r} (ran with {value!r})"
        for key, value in record.params.items()
        if params.get(key) != value
    ]
    if changed:
        return [
            Finding(
                False,
                f"stage {record.stage}",
                "outputs are stale; changed since it ran: " + "; ".join(changed),
            )
        ]
    return [Finding(True, f"stage {record.stage}", "inputs and params as when it ran")]


class _ArtifactMissing(Exception):
    """An artifact a run claims is not in the MLflow store (moved, deleted, `rm -rf mlruns`)."""


def _downloaded_md5(runs: RunFinder, digest: Callable[[Path], str], **artifact: str) -> str:
    """`digest` of an MLflow artifact (`run_id` + `artifact_path`, or `artifact_uri`)."""
    import mlflow

    with tempfile.TemporaryDirectory() as scratch:
        try:
            downloaded = mlflow.artifacts.download_artifacts(
                **artifact, dst_path=scratch, tracking_uri=runs.uri
            )
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            raise _ArtifactMissing(one_line(exc)) from None
        return digest(Path(downloaded))


def _missing(subject: str, reason: _ArtifactMissing) -> Finding:
    return Finding(False, subject, f"artifact missing from the MLflow store ({reason})")


def check_mlflow(record: StageRecord, runs: RunFinder) -> list[Finding]:
    findings = []
    for path, md5 in record.outs.items():
        claims = runs.producing(path, md5)
        if not claims:
            findings.append(Finding(False, path, f"no MLflow run records md5 {md5}"))
            continue
        run_id = claims[0]["run_id"]
        subject = f"{path} in MLflow run {run_id}"
        try:
            stored = _downloaded_md5(
                runs, dvc_md5, run_id=run_id, artifact_path=f"dvc_outputs/{path}"
            )
        except _ArtifactMissing as reason:
            findings.append(_missing(subject, reason))
        else:
            findings.append(
                Finding(
                    stored == md5,
                    subject,
                    f"artifact md5 {stored}"
                    + (" as in dvc.lock" if stored == md5 else f", dvc.lock records {md5}"),
                )
            )
        if path.endswith(".keras"):
            findings.append(_check_logged_model(runs, run_id, path, md5))
    return findings


def _check_logged_model(runs: RunFinder, run_id: str, path: str, md5: str) -> Finding:
    subject = f"{path} as the MLflow model of run {run_id}"
    logged = runs.logged_model(run_id)
    if logged is None:
        return Finding(False, subject, "no logged model")
    try:
        stored = _downloaded_md5(
            runs, dvc_md5, artifact_uri=f"{logged.artifact_location}/artifacts/{Path(path).name}"
        )
    except _ArtifactMissing as reason:
        return _missing(subject, reason)
    if stored == md5:
        return Finding(True, subject, "the same file, byte for byte")
    return Finding(False, subject, f"md5 {stored} differs from {md5} in dvc.lock")


def check_registry(root: Path, runs: RunFinder) -> list[Finding]:
    """The registry holds the model the register stage's receipt says it registered (a version
    deleted since, or a receipt pulled into a clone whose store never saw the model, are not)."""
    receipt_file = root / paths.REGISTRY_RECEIPT
    subject = paths.REGISTRY_RECEIPT.as_posix()
    try:
        receipt = json.loads(receipt_file.read_text())
        model, alias = str(receipt["model"]), str(receipt["alias"])
        benchmark = str(receipt.get("benchmark") or alias.removeprefix("champion-"))
        path, md5 = next((k, str(v)) for k, v in receipt.items() if k.endswith(".keras"))
    except FileNotFoundError:
        return []  # not registered yet: the dvc.lock checks say whether it should be
    except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError):
        return [Finding(False, subject, "not a receipt of the register stage")]
    query = (
        f"name = '{model}' and tag.`dvc.out.{path}` = '{md5}' "
        f"and tag.`aepipe.benchmark` = '{benchmark}'"
    )
    if not RunFinder.SAFE_TEXT.fullmatch(f"{model}{path}{md5}{benchmark}"):
        return [Finding(False, subject, "names a model, file or benchmark no registry holds")]
    with store_errors(runs.uri):
        found = runs.client.search_model_versions(query)
    if not found:
        return [
            Finding(
                False,
                subject,
                f"the registry of {runs.uri} has no version of {path} (md5 {md5}) on benchmark "
                f"{benchmark}: deleted since, or registered in another store; "
                "`dvc repro --force --single-item register` registers it here",
            )
        ]
    version = min(found, key=lambda v: int(v.version))
    decision = version.tags.get("aepipe.decision", "")
    return [
        Finding(
            True,
            subject,
            f"{model} version {version.version} holds {path} on {benchmark}"
            + (f" ({decision})" if decision else ""),
        )
    ]


def check_running(runs: RunFinder) -> list[Finding]:
    """Runs a killed process left RUNNING (the next stage, or `aepipe validate`, ends them)."""
    with store_errors(runs.uri):
        orphans = orphaned_runs(runs.client, runs.experiment_id)
    if not orphans:
        return [Finding(True, "MLflow runs", "none left RUNNING by a process that has ended")]
    return [
        Finding(
            False,
            f"MLflow run {run.info.run_id} ({run.data.tags.get('dvc.stage') or 'pipeline'})",
            "RUNNING, but the process that ran it has ended; `aepipe validate` marks it KILLED",
        )
        for run in orphans
    ]


def verify(root: Path) -> list[Finding]:
    records = [r for r in LockHistory(root).records if r.revision == WORKSPACE]
    if not records:
        return [Finding(False, "dvc.lock", "missing or empty: run `dvc repro` first")]
    findings, md5_of = [], md5s_under(root)
    try:
        raw = read_yaml((root / "params.yaml").read_text(), "params.yaml")
        params = flatten(raw if isinstance(raw, dict) else {})
    except (OSError, UnicodeDecodeError, ParamsError) as exc:
        params = {}
        findings.append(Finding(False, "params.yaml", f"unreadable, params not compared ({exc})"))
    for record in records:
        findings += check_outputs(record, md5_of)
        findings += check_inputs(record, md5_of, params)
    runs = RunFinder.open_existing()
    if runs is None:
        findings.append(Finding(True, "MLflow", "no store found; MLflow checks skipped"))
        return findings
    for record in records:
        if record.stage in STAGES_LOGGED_TO_MLFLOW:
            findings += check_mlflow(record, runs)
    findings += check_registry(root, runs)
    findings += check_running(runs)
    return findings
