"""`aepipe verify`: re-hash what `dvc.lock` and MLflow claim, and list every mismatch.

Checked: each output recorded in the workspace `dvc.lock` exists with its md5; each stage's
inputs and params still match what the stage ran on (else its outputs are stale); and for each
output logged to MLflow, the newest run that claims it stored exactly those bytes, both the
`dvc_outputs/` copy and, for models, the model logged with MLflow's Keras flavour.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import flatten
from pipeline.fsutil import dvc_md5
from pipeline.keras_archive import canonical_keras_bytes
from pipeline.lineage import WORKSPACE, LockHistory, StageRecord
from pipeline.tracking import RunFinder

STAGES_LOGGED_TO_MLFLOW = ("train_basic", "train_denoise", "evaluate")


@dataclass(frozen=True)
class Finding:
    ok: bool
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{'ok     ' if self.ok else 'PROBLEM'}  {self.subject}: {self.message}"


def _md5_or_none(path: Path) -> str | None:
    return dvc_md5(path) if path.exists() else None


def check_outputs(record: StageRecord, root: Path) -> list[Finding]:
    findings = []
    for path, recorded in record.outs.items():
        actual = _md5_or_none(root / path)
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


def check_inputs(record: StageRecord, root: Path, params: dict) -> list[Finding]:
    """Inputs or params that changed since the stage ran make its outputs stale."""
    changed = [
        f"{path} (md5 {_md5_or_none(root / path)}, ran on {md5})"
        for path, md5 in record.deps.items()
        if _md5_or_none(root / path) != md5
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


def check_mlflow(record: StageRecord, runs: RunFinder) -> list[Finding]:
    import mlflow

    findings = []
    for path, md5 in record.outs.items():
        claims = runs.producing(path, md5)
        if not claims:
            findings.append(Finding(False, path, f"no MLflow run records md5 {md5}"))
            continue
        run_id = claims[0]["run_id"]
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id,
                    artifact_path=f"dvc_outputs/{path}",
                    dst_path=scratch,
                    tracking_uri=runs.uri,
                )
            )
            stored = dvc_md5(copy)
        findings.append(
            Finding(
                stored == md5,
                f"{path} in MLflow run {run_id}",
                f"artifact md5 {stored}"
                + (" as in dvc.lock" if stored == md5 else f", dvc.lock records {md5}"),
            )
        )
        if path.endswith(".keras"):
            findings.append(_check_logged_model(runs, run_id, path, md5))
    return findings


def _check_logged_model(runs: RunFinder, run_id: str, path: str, md5: str) -> Finding:
    import mlflow

    subject = f"{path} as MLflow Keras model of run {run_id}"
    logged = runs.logged_model(run_id)
    if logged is None:
        return Finding(False, subject, "no logged model")
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{logged.artifact_location}/data/model.keras",
                dst_path=scratch,
                tracking_uri=runs.uri,
            )
        )
        logged = hashlib.md5(canonical_keras_bytes(archive.read_bytes())).hexdigest()
    if logged == md5:
        return Finding(True, subject, "same weights and config, byte for byte")
    return Finding(False, subject, f"md5 {logged} (canonical) differs from {md5} in dvc.lock")


def verify(root: Path) -> list[Finding]:
    records = [r for r in LockHistory(root).records if r.revision == WORKSPACE]
    if not records:
        return [Finding(False, "dvc.lock", "missing or empty: run `dvc repro` first")]
    params = flatten(yaml.safe_load((root / "params.yaml").read_text()) or {})
    findings = []
    for record in records:
        findings += check_outputs(record, root)
        findings += check_inputs(record, root, params)
    runs = RunFinder.open_existing()
    if runs is None:
        findings.append(Finding(True, "MLflow", "no store found; MLflow checks skipped"))
        return findings
    for record in records:
        if record.stage in STAGES_LOGGED_TO_MLFLOW:
            findings += check_mlflow(record, runs)
    return findings
