"""Interrupted, failing, misconfigured and distributed training: never costs a user results."""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

from pipeline.tracking import recorder
from tests.conftest import (
    copy_repo,
    default_params,
    free_port,
    merge,
    pipeline_env,
    processes_running,
    run,
    runs_of,
    start_and_wait_for,
)

# Kills and pauses stage processes: the ones DVC starts, as a cold start has them.
pytestmark = [pytest.mark.e2e, pytest.mark.cold_start]

# Enough epochs and images that a kill lands mid-training, small enough to take seconds.
KILLABLE = {
    "data": {"train_size": 12000, "test_size": 500},
    "train_basic": {"epochs": 8, "batch_size": 64},
    "train_denoise": {"epochs": 2, "batch_size": 64},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_repo(
        tmp_path_factory.mktemp("reliability") / "repo", merge(default_params(), KILLABLE)
    )
    run(["dvc", "repro", "noise"], repo)
    return repo


def training_process(parent: subprocess.Popen) -> psutil.Process:
    for child in processes_running(
        "pipeline.stages.train", psutil.Process(parent.pid).children(recursive=True)
    ):
        return child
    raise AssertionError("no training process below dvc")


def test_sigkill_then_repro_resumes_and_matches_an_uninterrupted_run(repo):
    dvc = start_and_wait_for(["dvc", "repro", "train_basic"], repo, "train_basic: epoch 2/8")
    training_process(dvc).kill()
    remaining = dvc.communicate(timeout=120)[0]
    assert dvc.returncode != 0
    assert not (repo / "models/basic.keras").exists()
    state = json.loads((repo / ".aepipe/checkpoints/train_basic/state.json").read_text())
    done = len(state["rows"])
    assert 2 <= done < 8, remaining

    resumed = run(["dvc", "repro", "train_basic"], repo).stdout
    assert f"train_basic: resuming after epoch {done}" in resumed
    assert not (repo / ".aepipe/checkpoints/train_basic").exists()
    resumed_model = (repo / "models/basic.keras").read_bytes()
    resumed_history = (repo / "reports/train_basic/history.csv").read_text()

    run(["dvc", "repro", "--force", "--single-item", "train_basic"], repo)  # from scratch
    assert (repo / "models/basic.keras").read_bytes() == resumed_model
    assert (repo / "reports/train_basic/history.csv").read_text() == resumed_history

    *_, killed, resumed_run, scratch = runs_of(repo, "train_basic")
    assert killed.info.status == "KILLED"
    assert resumed_run.info.status == "FINISHED"
    assert resumed_run.data.tags["aepipe.resumed_from_run"] == killed.info.run_id
    assert resumed_run.data.tags["aepipe.resumed_after_epoch"] == str(done)
    assert "aepipe.resumed_from_run" not in scratch.data.tags
    assert resumed_run.data.metrics["loss"] == scratch.data.metrics["loss"]
    # The pipeline run the killed stage was nested under: the process that logged the stage saw
    # it die and ended both KILLED rather than leave them RUNNING forever.
    parent = next(
        r for r in runs_of(repo) if r.info.run_id == killed.data.tags["mlflow.parentRunId"]
    )
    assert parent.info.status == "KILLED"
    assert killed.data.tags["aepipe.ended_by"] == parent.data.tags["aepipe.ended_by"]
    assert parent.data.tags["aepipe.ended_by"] == recorder.STAGE_DIED


def test_sigterm_ends_the_mlflow_run_as_killed_and_leaves_no_half_written_file(repo):
    process = start_and_wait_for(["aepipe", "train", "denoise"], repo, "train_denoise: epoch 1/2")
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert "aepipe train: interrupted" in output
    assert runs_of(repo, "train_denoise")[-1].info.status == "KILLED"
    leftovers = [p for p in repo.rglob("*.tmp-*") if ".dvc" not in p.parts]
    assert leftovers == []


def test_an_unreachable_tracking_server_fails_before_training_naming_the_uri(repo):
    uri = f"http://127.0.0.1:{free_port()}"
    result = run(
        ["aepipe", "train", "basic"],
        repo,
        check=False,
        env=pipeline_env({"MLFLOW_TRACKING_URI": uri}),
    )
    assert result.returncode == 2
    assert f"MLflow tracking server {uri} is unreachable" in result.stderr
    assert "epoch" not in result.stdout


def test_a_mistyped_key_set_through_exp_run_is_refused(repo):
    with restored_params(repo):
        refuse_mistyped_keys(repo)


def refuse_mistyped_keys(repo: Path) -> None:
    refused_by_dvc = run(["dvc", "exp", "run", "-S", "train_basic.epoch=5"], repo, check=False)
    assert refused_by_dvc.returncode != 0
    assert "Could not override 'train_basic.epoch'" in refused_by_dvc.stderr
    # `+key=value` makes DVC add the key; the validate stage refuses it.
    result = run(["dvc", "exp", "run", "-S", "+train_basic.epoch=5"], repo, check=False)
    assert result.returncode != 0
    assert "unknown key 'train_basic.epoch'" in result.stderr
    assert "Running stage 'train_basic'" not in result.stdout


@contextlib.contextmanager
def restored_params(repo: Path):
    """params.yaml as committed again, however the block ends."""
    try:
        yield
    finally:
        run(["git", "checkout", "params.yaml"], repo)


def history(path: Path) -> list[tuple[float, float]]:
    with open(path) as handle:
        return [(float(row["loss"]), float(row["val_loss"])) for row in csv.DictReader(handle)]


def edit_params(repo: Path, **sections: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        params[section] = {**params.get(section, {}), **values}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_two_workers_train_like_one(repo):
    with restored_params(repo):
        # Batches of 256: a quarter of the all-reduces of the default 64, the same comparison.
        edit_params(repo, train_basic={"epochs": 2, "batch_size": 256})
        run(["dvc", "repro", "--single-item", "train_basic"], repo)
        single = history(repo / "reports/train_basic/history.csv")
        runs_before = len(runs_of(repo, "train_basic"))
        edit_params(repo, distribute={"strategy": "multi_worker", "workers": 2})
        stdout = run(["dvc", "repro", "--single-item", "train_basic"], repo).stdout
        two = history(repo / "reports/train_basic/history.csv")
    run(["dvc", "checkout", "--force", "train_basic"], repo, check=False)
    assert len(single) == len(two) == 2
    for (loss, val), (loss2, val2) in zip(single, two, strict=True):
        assert abs(loss - loss2) < 1e-4 and abs(val - val2) < 1e-4
    assert stdout.count("train_basic: epoch 1/") == 1  # only the chief reports
    runs = runs_of(repo, "train_basic")
    assert len(runs) == runs_before + 1  # only the chief logs
    assert runs[-1].data.params["distribute.strategy"] == "multi_worker"


def test_sigkill_of_a_multi_worker_launcher_takes_its_workers_with_it(repo):
    """Its workers must not train on, re-parented to init, and write a model a minute later."""
    with restored_params(repo):
        edit_params(
            repo,
            train_basic={"batch_size": 256},
            distribute={"strategy": "multi_worker", "workers": 2},
        )
        dvc = start_and_wait_for(
            ["dvc", "repro", "--single-item", "train_basic"], repo, "train_basic: epoch 1/"
        )
        trainers = processes_running(
            "pipeline.stages.train", psutil.Process(dvc.pid).children(recursive=True)
        )
        [launcher] = [p for p in trainers if p.ppid() not in {t.pid for t in trainers}]
        workers = [p for p in trainers if p is not launcher]
        assert len(workers) == 2
        launcher.kill()
        _, alive = psutil.wait_procs(workers, timeout=120)  # killed with it, not trained on
        assert alive == []
        dvc.communicate(timeout=120)
        assert dvc.returncode != 0
        assert not (repo / "models/basic.keras").exists()  # DVC removed it; nobody wrote it
    run(["dvc", "checkout", "--force", "train_basic"], repo, check=False)


def test_a_stage_whose_dvc_process_is_killed_stops_instead_of_training_on(repo):
    """SIGKILL of `dvc repro` itself: the stage notices its pipeline process is gone, ends its
    MLflow run KILLED and writes no model (it would otherwise finish unseen and overwrite it)."""
    dvc = start_and_wait_for(
        ["dvc", "repro", "--force", "--single-item", "train_basic"], repo, "train_basic: epoch 1/8"
    )
    stage = training_process(dvc)
    stage.suspend()  # however fast the epochs, dvc is gone before the stage could save a model
    dvc.kill()
    dvc.wait()
    stage.resume()
    _, alive = psutil.wait_procs([stage], timeout=120)
    assert alive == []
    assert not (repo / "models/basic.keras").exists()
    psutil.wait_procs(processes_running("pipeline.tracking.recorder"), timeout=120)
    assert runs_of(repo, "train_basic")[-1].info.status == "KILLED"
    run(["dvc", "checkout", "--force", "train_basic"], repo, check=False)
