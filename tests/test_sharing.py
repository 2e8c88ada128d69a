"""`aepipe push`: another clone restores an experiment's stages from the DVC remote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.experiments import sharing
from tests.conftest import run

pytestmark = pytest.mark.e2e

# A stage like the pipeline's: cached outputs (a file and a directory), and a plot git keeps.
DVC_YAML = """\
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [x]
    outs: [out.txt, figures]
    plots:
      - history.csv:
          cache: false
"""
MAKE = """\
import pathlib, yaml
x = yaml.safe_load(open("params.yaml"))["x"]
pathlib.Path("out.txt").write_text(str(x))
pathlib.Path("figures").mkdir(exist_ok=True)
pathlib.Path("figures/x.txt").write_text(str(x))
pathlib.Path("history.csv").write_text(f"epoch,x\\n1,{x}")
"""


def _project(path: Path, remote: Path) -> Path:
    path.mkdir()
    for command in (
        ["git", "init", "-q"],
        ["git", "config", "user.name", "t"],
        ["git", "config", "user.email", "t@t"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "remote", "add", "-d", "shared", str(remote)],
    ):
        subprocess.run(command, cwd=path, check=True, capture_output=True)
    (path / "params.yaml").write_text("x: 1\n")
    (path / "dvc.yaml").write_text(DVC_YAML)
    (path / "make.py").write_text(MAKE)
    run([sys.executable, "-m", "dvc", "repro", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "x=1"], path)
    return path


def _clone(origin: Path, path: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(path)], origin.parent)
    run(["git", "config", "user.name", "t"], path)
    run(["git", "config", "user.email", "t@t"], path)
    return path


def test_another_clone_restores_an_experiments_stage_after_aepipe_push(tmp_path):
    here = _project(tmp_path / "here", tmp_path / "remote")
    run([sys.executable, "-m", "dvc", "exp", "run", "-q", "-S", "x=2"], here)
    run([sys.executable, "-m", "dvc", "push", "-q", "--run-cache"], here)

    # DVC's own push leaves the experiment's outputs behind: the other clone runs the stage.
    first = _clone(here, tmp_path / "first")
    rerun = run([sys.executable, "-m", "dvc", "exp", "run", "--pull", "-S", "x=2"], first)
    assert "Running stage 'make'" in rerun.stdout

    with sharing.project(here, "push") as opened:
        assert sharing.push(opened) >= 2  # out.txt and history.csv of the experiment
    second = _clone(here, tmp_path / "second")
    restored = run([sys.executable, "-m", "dvc", "exp", "run", "--pull", "-S", "x=2"], second)
    assert "Stage 'make' is cached - skipping run" in restored.stdout
    assert (second / "out.txt").read_text() == "2"
    assert (second / "history.csv").read_text() == "epoch,x\n1,2"

    # An entry whose outputs are nowhere to be had (DVC's push sent the entry alone): a clone
    # that pulled it pushes what it has, without an error.
    for x in (3, 1):  # the workspace back at x=1: x=3's outputs stay in this cache only
        run([sys.executable, "-m", "dvc", "exp", "run", "-q", "-S", f"x={x}"], here)
    run([sys.executable, "-m", "dvc", "push", "-q", "--run-cache"], here)
    third = _clone(here, tmp_path / "third")
    run([sys.executable, "-m", "dvc", "pull", "-q", "--run-cache"], third)
    with sharing.project(third, "push") as opened:
        sharing.push(opened)
