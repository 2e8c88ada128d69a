"""`aepipe verify`: re-hash what `dvc.lock` and MLflow claim, and list every mismatch.

Checked: each output recorded in the workspace `dvc.lock` exists with its md5; each stage's
inputs and params still match what the stage ran on (else its outputs are stale); and for each
output logged to MLflow, the newest run that claims it stored exactly those bytes, both the
`dvc_outputs/` copy and, for models, the model logged with MLflow's Keras flavour.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.artifacts.keras_archive import canonical_keras_bytes
from pipeline.audit.lineage import WORKSPACE, LockHistory, StageRecord
from pipeline.core.config import flatten
from pipeline.core.files import dvc_md5
from pipeline.tracking.finder import RunFinder

STAGES_LOGGED_TO_MLFLOW = ("train_basic", "train_denoise", "evaluate")


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


def _downloaded_md5(runs: RunFinder, digest: Callable[[Path], str], **artifact: str) -> str:
    """`digest` of an MLflow artifact (`run_id` + `artifact_path`, or `artifact_uri`)."""
    import mlflow

    with tempfile.TemporaryDirectory() as scratch:
        return digest(
            Path(
                mlflow.artifacts.download_artifacts(
                    **artifact, dst_path=scratch, tracking_uri=runs.uri
                )
            )
        )


def _canonical_keras_md5(archive: Path) -> str:
    return hashlib.md5(canonical_keras_bytes(archive.read_bytes())).hexdigest()


def check_mlflow(record: StageRecord, runs: RunFinder) -> list[Finding]:
    findings = []
    for path, md5 in record.outs.items():
        claims = runs.producing(path, md5)
        if not claims:
            findings.append(Finding(False, path, f"no MLflow run records md5 {md5}"))
            continue
        run_id = claims[0]["run_id"]
        stored = _downloaded_md5(runs, dvc_md5, run_id=run_id, artifact_path=f"dvc_outputs/{path}")
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
    subject = f"{path} as MLflow Keras model of run {run_id}"
    logged = runs.logged_model(run_id)
    if logged is None:
        return Finding(False, subject, "no logged model")
    stored = _downloaded_md5(
        runs, _canonical_keras_md5, artifact_uri=f"{logged.artifact_location}/data/model.keras"
    )
    if stored == md5:
        return Finding(True, subject, "same weights and config, byte for byte")
    return Finding(False, subject, f"md5 {stored} (canonical) differs from {md5} in dvc.lock")


def verify(root: Path) -> list[Finding]:
    records = [r for r in LockHistory(root).records if r.revision == WORKSPACE]
    if not records:
        return [Finding(False, "dvc.lock", "missing or empty: run `dvc repro` first")]
    params = flatten(yaml.safe_load((root / "params.yaml").read_text()) or {})
    findings, md5_of = [], md5s_under(root)
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
    return findings
