"""Facts about the code and the run that produced an output: git state, DVC context, versions.

Nothing here imports TensorFlow or MLflow; versions are read from package metadata.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil

TRACKED_PACKAGES = ("tensorflow-cpu", "keras", "dvc", "mlflow", "numpy")


@dataclass(frozen=True)
class GitState:
    commit: str  # "unknown" outside a git repository
    dirty: bool
    diff: str  # `git diff HEAD` of tracked files except pipeline outputs; empty when clean


# Files that `dvc repro` itself rewrites; changes to them say nothing about the code.
OUTPUT_PATHSPEC = (":(exclude)dvc.lock", ":(exclude)reports")


def git(*args: str, cwd: Path, check: bool = True) -> str:
    """The output of `git <args>` in `cwd`; with `check=False`, "" where git fails."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check)
    return result.stdout if result.returncode == 0 else ""


def git_state(cwd: Path | None = None) -> GitState:
    cwd = cwd or Path.cwd()
    try:
        commit = git("rev-parse", "HEAD", cwd=cwd).strip()
        diff = git("diff", "HEAD", "--no-color", "--", ".", *OUTPUT_PATHSPEC, cwd=cwd)
    except (OSError, subprocess.CalledProcessError):
        return GitState("unknown", True, "")
    return GitState(commit, bool(diff), diff)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def dvc_experiment() -> dict[str, str]:
    """The DVC experiment name and baseline, set by `dvc exp run` (empty under `dvc repro`)."""
    found = {
        "name": os.environ.get("DVC_EXP_NAME", ""),
        "baseline": os.environ.get("DVC_EXP_BASELINE_REV", ""),
    }
    return {key: value for key, value in found.items() if value}


def pipeline_process() -> psutil.Process:
    """The `dvc repro` / `dvc exp run` process this stage runs under (the nearest `dvc`
    ancestor), or this process when a stage is run by hand."""
    me = psutil.Process()
    try:
        return next((p for p in me.parents() if _is_dvc_command(p.cmdline())), me)
    except (psutil.Error, OSError):
        return me


def process_identity(process: psutil.Process) -> str:
    """`host:pid:start time`: one process, also after its pid is reused by another."""
    return f"{platform.node()}:{process.pid}:{process.create_time():.3f}"


def process_gone(identity: str) -> bool:
    """True if `identity` (see `process_identity`) names a process of this host that has ended;
    False while it runs, and for other hosts or unreadable identities (nothing is known)."""
    host, _, rest = identity.partition(":")
    pid, _, started = rest.partition(":")
    if host != platform.node() or not pid.isdigit():
        return False
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" != started
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def pipeline_run_id() -> str:
    """One id shared by every stage started by the same `dvc repro` / `dvc exp run` process.

    DVC starts each stage as a child process and tells it nothing that identifies the run, so
    the id is derived from the nearest `dvc` ancestor process (pid and start time). A stage run
    by hand gets an id of its own. `AEPIPE_PIPELINE_RUN` overrides both.
    """
    if configured := os.environ.get("AEPIPE_PIPELINE_RUN"):
        return configured
    try:
        key = process_identity(pipeline_process())
    except (psutil.Error, OSError):
        return uuid.uuid4().hex[:16]
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _is_dvc_command(argv: list[str]) -> bool:
    for index, part in enumerate(argv[:3]):
        if Path(part).name == "dvc" or (part == "-m" and argv[index + 1 : index + 2] == ["dvc"]):
            return True
    return False
