"""Lineage: from a model file, a DVC output or an MLflow run back to the raw data.

Two records are joined by md5: every `dvc.lock` ever written (the workspace's, every commit's
and every DVC experiment's, read from git) says which stage run made which output from which
inputs and params; every MLflow run is tagged with the same md5s (`dvc.dep.*`, `dvc.out.*`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.core import paths
from pipeline.core.errors import PipelineError
from pipeline.core.files import dvc_md5
from pipeline.core.shell import git
from pipeline.tracking import provenance
from pipeline.tracking.finder import RUN_ID, RunFinder

WORKSPACE = "workspace"


@dataclass(frozen=True)
class StageRecord:
    """One stage's entry in one version of `dvc.lock`."""

    revision: str  # WORKSPACE or a git commit
    stage: str
    cmd: str
    params: dict[str, Any]
    deps: dict[str, str]  # path -> md5
    outs: dict[str, str]


@dataclass
class Step:
    """How one output (path, md5) was made, and the steps that made its inputs."""

    path: str
    md5: str
    record: StageRecord | None = None
    recorded_in: list[str] = field(default_factory=list)  # dvc.lock versions naming it
    experiments: list[str] = field(default_factory=list)  # DVC experiments that hold it
    mlflow_runs: list[dict[str, str]] = field(default_factory=list)
    inputs: list[Step] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        made_by = None
        if self.record:
            made_by = {
                "stage": self.record.stage,
                "cmd": self.record.cmd,
                "params": self.record.params,
                "recorded_in": self.recorded_in,
                "dvc_experiments": self.experiments,
            }
        return {
            "path": self.path,
            "md5": self.md5,
            "made_by": made_by,
            "mlflow_runs": self.mlflow_runs,
            "note": self.note or None,
            "inputs": [step.as_dict() for step in self.inputs],
        }


def parse_lock(text: str, revision: str) -> list[StageRecord]:
    lock = yaml.safe_load(text) or {}
    records = []
    for stage, body in (lock.get("stages") or {}).items():
        params = {}
        for values in (body.get("params") or {}).values():
            params.update(values)
        records.append(
            StageRecord(
                revision=revision,
                stage=stage,
                cmd=body.get("cmd", ""),
                params=params,
                deps={entry["path"]: entry["md5"] for entry in body.get("deps", [])},
                outs={entry["path"]: entry["md5"] for entry in body.get("outs", [])},
            )
        )
    return records


class LockHistory:
    """Every recorded stage run: the workspace `dvc.lock`, then each git version, newest first."""

    def __init__(self, root: Path):
        self.root = root
        self.records: list[StageRecord] = []
        workspace_lock = root / "dvc.lock"
        if workspace_lock.is_file():
            self.records += parse_lock(workspace_lock.read_text(), WORKSPACE)
        for commit in git(
            "log", "--all", "--format=%H", "--", "dvc.lock", cwd=root, check=False
        ).split():
            self.records += parse_lock(
                git("show", f"{commit}:dvc.lock", cwd=root, check=False), commit
            )
        self.experiments = {}  # commit -> DVC experiment name
        for line in git(
            "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps", cwd=root, check=False
        ).splitlines():
            commit, ref = line.split(" ", 1)
            parts = ref.split("/")
            if len(parts) == 5:  # refs/exps/ab/cdef.../<name>
                self.experiments[commit] = parts[-1]

    def producers(self, path: str, md5: str) -> list[StageRecord]:
        """Records of stage runs that wrote exactly this output, workspace first."""
        return [r for r in self.records if r.outs.get(path) == md5]

    def workspace_record(self, stage: str) -> StageRecord | None:
        return next((r for r in self.records if r.revision == WORKSPACE and r.stage == stage), None)


class Tracer:
    def __init__(self, history: LockHistory, runs: RunFinder | None):
        self.history = history
        self.runs = runs
        self.seen: set[tuple[str, str]] = set()

    def trace(self, path: str, md5: str) -> Step:
        step = Step(path, md5)
        if (path, md5) in self.seen:
            step.note = "traced above"
            return step
        self.seen.add((path, md5))
        if self.runs:
            step.mlflow_runs = self.runs.producing(path, md5)
        producers = self.history.producers(path, md5)
        if not producers:
            step.note = _unrecorded_note(path, self.history, self.runs is not None)
            return step
        step.record = producers[0]
        step.recorded_in = list(dict.fromkeys(r.revision for r in producers))
        step.experiments = [
            self.history.experiments[r] for r in step.recorded_in if r in self.history.experiments
        ]
        if step.record.stage == "fetch":
            step.note = _fetch_note(self.history.root, md5)
        for dep_path, dep_md5 in step.record.deps.items():
            if not dep_path.startswith("pipeline/") and dep_path != "params.yaml":
                step.inputs.append(self.trace(dep_path, dep_md5))
        return step


def _fetch_note(root: Path, md5: str) -> str:
    note = "MNIST: fetch checked every array against the published sha256"
    try:
        served = json.loads((root / paths.FETCH_RECORD).read_text())
    except (OSError, ValueError):
        return note
    if served.get("raw_md5") == md5:
        note += f"; served here by {served['served_by']}"
    return note


def _unrecorded_note(path: str, history: LockHistory, have_runs: bool) -> str:
    recorded = {r.outs[path] for r in history.records if path in r.outs}
    if not recorded:
        return "not an output of any stage in dvc.lock"
    return (
        "this md5 is in no dvc.lock version (edited by hand, or made by a run that was "
        "never committed)" + ("" if have_runs else "; no MLflow store to search")
    )


def code_state(root: Path) -> dict[str, Any]:
    state = provenance.git_state(root)
    lock_changed = bool(
        git("status", "--porcelain", "--", "dvc.lock", cwd=root, check=False).strip()
    )
    return {"commit": state.commit, "code_dirty": state.dirty, "dvc_lock_uncommitted": lock_changed}


def recorded_output(target: str, root: Path, history: LockHistory) -> str | None:
    """The DVC output (as dvc.lock names it) that the path `target` is, or lies inside; None
    when `target` is not a path inside the repository at all. Refuses paths that no dvc.lock
    version records as (part of) an output, before anything is hashed."""
    if not target.strip():
        raise PipelineError("give a file (e.g. models/denoise.keras) or an MLflow run id")
    path = (root / target).resolve()
    if not path.exists():
        return None
    base = root.resolve()
    if not path.is_relative_to(base):
        raise PipelineError(f"{target}: outside the repository {base}")
    relative = path.relative_to(base).as_posix()
    outputs = {out for record in history.records for out in record.outs}
    holding = [out for out in outputs if relative == out or relative.startswith(out + "/")]
    if not holding:
        known = ", ".join(
            sorted(out for r in history.records if r.revision == WORKSPACE for out in r.outs)
        )
        raise PipelineError(f"{target}: not an output of any stage in dvc.lock (outputs: {known})")
    return holding[0]


def lineage_of(target: str, root: Path) -> dict[str, Any]:
    """The lineage of a DVC output (a model, a report, a data directory or a file in one) or of
    an MLflow run id, as a dict."""
    history = LockHistory(root)
    output = recorded_output(target, root, history)
    runs = RunFinder.open_existing()
    tracer = Tracer(history, runs)
    if output is not None:
        steps = [tracer.trace(output, dvc_md5(root / output))]
        origin: dict[str, Any] = {"file": output}
    elif not RUN_ID.fullmatch(target):
        raise PipelineError(
            f"{target}: no such file, and not an MLflow run id (32 hexadecimal digits)"
        )
    else:
        if runs is None:
            raise PipelineError(f"{target}: no MLflow store to look the run up in")
        run = runs.run(target)
        steps = [tracer.trace(out, md5) for out, md5 in run["outputs"].items()]
        origin = {"mlflow_run": run}
    return {
        "target": origin,
        "code": code_state(root),
        "lineage": [step.as_dict() for step in steps],
    }


def render(lineage: dict[str, Any]) -> str:
    lines = []
    target = lineage["target"]
    if "mlflow_run" in target:
        run = target["mlflow_run"]
        lines.append(
            f"MLflow run {run['run_id']} ({run['stage']}, {run['status']}): "
            f"git {run['git_commit'][:12]} dirty={run['git_dirty']}, "
            f"experiment {run['dvc_experiment'] or '-'}"
        )
    code = lineage["code"]
    lines.append(
        f"workspace: git {code['commit'][:12]}, code dirty={code['code_dirty']}, "
        f"dvc.lock uncommitted={code['dvc_lock_uncommitted']}"
    )
    for step in lineage["lineage"]:
        _render_step(step, "", lines)
    return "\n".join(lines) + "\n"


def _render_step(step: dict[str, Any], indent: str, lines: list[str]) -> None:
    lines.append(f"{indent}{step['path']}  md5 {step['md5']}")
    inner = indent + "    "
    made_by = step["made_by"]
    if made_by:
        versions = [v if v == WORKSPACE else v[:12] for v in made_by["recorded_in"]]
        shown = ", ".join(versions[:3]) + (
            f" and {len(versions) - 3} more" if len(versions) > 3 else ""
        )
        experiments = ", ".join(made_by["dvc_experiments"])
        lines.append(f"{inner}made by stage {made_by['stage']}: {made_by['cmd']}")
        lines.append(
            f"{inner}recorded in dvc.lock of: {shown}"
            + (f"; in DVC experiments: {experiments}" if experiments else "")
        )
        if made_by["params"]:
            lines.append(
                f"{inner}params: "
                + ", ".join(f"{k}={v}" for k, v in sorted(made_by["params"].items()))
            )
    for run in step["mlflow_runs"]:
        lines.append(
            f"{inner}MLflow run {run['run_id']} {run['link']} ({run['status']}, "
            f"git {run['git_commit'][:12]} dirty={run['git_dirty']}, "
            f"experiment {run['dvc_experiment'] or '-'}, "
            f"pipeline run {run['pipeline_run']})"
        )
    if step["note"]:
        lines.append(f"{inner}note: {step['note']}")
    for child in step["inputs"]:
        _render_step(child, inner, lines)
