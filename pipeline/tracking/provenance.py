"""Facts about the code and the run that produced an output: git state, DVC context, versions.

Nothing here imports TensorFlow or MLflow; versions are read from package metadata.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pipeline.core.shell import git

TRACKED_PACKAGES = ("tensorflow-cpu", "keras", "dvc", "mlflow", "numpy")


@dataclass(frozen=True)
class GitState:
    commit: str  # "unknown" outside a git repository
    dirty: bool
    diff: str  # `git diff HEAD` of tracked files except pipeline outputs; empty when clean


# Files that `dvc repro` itself rewrites; changes to them say nothing about the code.
OUTPUT_PATHSPEC = (":(exclude)dvc.lock", ":(exclude)reports")


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
