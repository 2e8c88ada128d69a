"""A stage refuses params.yaml changed under its pipeline run (another `dvc exp run` in the same
workspace writes its -S values before DVC's lock refuses it)."""

from __future__ import annotations

import pytest
import yaml

from pipeline.core import params_guard
from pipeline.core.config import load_params
from pipeline.core.errors import ParamsError
from tests.conftest import default_params, merge


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(params_guard, "_remembered", {})
    monkeypatch.setenv("AEPIPE_PIPELINE_RUN", "run-1")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params()))
    return tmp_path


def write(workspace, change: dict) -> None:
    (workspace / "params.yaml").write_text(yaml.safe_dump(merge(default_params(), change)))


def test_a_change_during_a_stage_fails_it_naming_the_key(workspace):
    params_guard.remember("params.yaml", load_params())
    params_guard.unchanged()  # formatting and comments do not count, values do
    write(workspace, {"evaluate": {"n_examples": 2}})
    with pytest.raises(
        ParamsError,
        match=r"params\.yaml changed while this pipeline ran "
        r"\(evaluate\.n_examples was 5, now 2\)",
    ):
        params_guard.unchanged()


def test_a_later_stage_of_the_same_run_refuses_params_the_first_did_not_see(workspace, monkeypatch):
    params_guard.remember("params.yaml", load_params())  # the first stage of run-1
    write(workspace, {"train_denoise": {"epochs": 3}})
    monkeypatch.setattr(params_guard, "_remembered", {})  # the next stage: another process
    with pytest.raises(ParamsError, match=r"train_denoise\.epochs was 10, now 3"):
        params_guard.remember("params.yaml", load_params())
    monkeypatch.setenv("AEPIPE_PIPELINE_RUN", "run-2")  # the next `dvc repro`: its own start
    params_guard.remember("params.yaml", load_params())


def test_snapshots_of_pipeline_runs_whose_process_ended_are_removed(workspace, monkeypatch):
    import json

    stale = params_guard.SNAPSHOTS_DIR / "old.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"process": "nohost:1:1.0", "params": {}}))
    gone = workspace / params_guard.SNAPSHOTS_DIR / "gone.json"
    gone.write_text(json.dumps({"process": "", "params": {}}))
    monkeypatch.setattr(params_guard.processes, "process_gone", lambda identity: not identity)
    params_guard.remember("params.yaml", load_params())
    assert sorted(p.name for p in gone.parent.iterdir()) == ["old.json", "run-1.json"]


def test_under_dvc_exp_run_the_params_are_those_dvc_set_up_for_this_experiment(
    workspace, monkeypatch
):
    """Two `dvc exp run` started at once: the one DVC runs found params.yaml already changed by
    the other before its first stage. DVC's commit of what it runs says what was meant."""
    import subprocess

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=workspace, check=True, capture_output=True,
        )  # fmt: skip

    git("init", "-q")
    write(workspace, {"noise": {"factor": 0.3}})  # what `dvc exp run -n second -S ...` set up
    git("add", "params.yaml")
    git("commit", "-qm", "dvc-exp:abc:abc:second")
    git("update-ref", "refs/exps/exec/EXEC_MERGE", "HEAD")
    monkeypatch.setenv("DVC_EXP_NAME", "second")
    params_guard.remember("params.yaml", load_params())
    monkeypatch.setattr(params_guard, "_remembered", {})
    write(workspace, {"noise": {"factor": 0.3}, "train_denoise": {"epochs": 3}})  # the other's
    with pytest.raises(ParamsError, match=r"train_denoise\.epochs was 10, now 3"):
        params_guard.remember("params.yaml", load_params())
    monkeypatch.setenv("DVC_EXP_NAME", "first")
    with pytest.raises(ParamsError, match="DVC now runs experiment second, this stage belongs"):
        params_guard.remember("params.yaml", load_params())
