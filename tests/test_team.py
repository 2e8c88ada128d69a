"""Team scale: DVC remote round trip, two-worker training, MLflow server on PostgreSQL."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from pipeline import server
from pipeline.config import load_params
from pipeline.fsutil import dvc_md5
from pipeline.stages import register
from tests.conftest import (
    TINY_PARAMS,
    copy_repo,
    default_params,
    free_port,
    lock_out_md5,
    merge,
    pipeline_env,
    run,
    runs_of,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("team") / "repo", merge(default_params(), TINY_PARAMS))
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "results"], repo)
    return repo


def history(path: Path) -> list[tuple[float, float]]:
    with open(path) as handle:
        return [(float(row["loss"]), float(row["val_loss"])) for row in csv.DictReader(handle)]


def test_push_and_pull_into_a_fresh_clone_restores_everything_without_retraining(repo, tmp_path):
    env = pipeline_env({"HOME": str(tmp_path / "home")})  # the default remote is ~/.cache/...
    run(["dvc", "push"], repo, env=env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run(["dvc", "pull"], clone, env=env)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone, env=env).stdout
    assert "Running stage" not in run(["dvc", "repro"], clone, env=env).stdout
    for path in ("models/denoise.keras", "reports/metrics.json", "data/raw"):
        assert dvc_md5(clone / path) == dvc_md5(repo / path)


def test_two_workers_train_like_one(repo):
    single = history(repo / "reports/train_basic/history.csv")
    runs_before = len(runs_of(repo, "train_basic"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["distribute"] = {"strategy": "multi_worker", "workers": 2}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stdout = run(["dvc", "repro", "--single-item", "train_basic"], repo).stdout
    two = history(repo / "reports/train_basic/history.csv")
    assert len(two) == len(single)
    for (loss, val), (loss2, val2) in zip(single, two, strict=True):
        assert abs(loss - loss2) < 1e-4 and abs(val - val2) < 1e-4
    assert stdout.count("train_basic: epoch 1/") == 1  # only the chief reports
    runs = runs_of(repo, "train_basic")
    assert len(runs) == runs_before + 1  # only the chief logs
    assert runs[-1].data.params["distribute.strategy"] == "multi_worker"
    run(["git", "checkout", "params.yaml"], repo)
    run(["dvc", "checkout"], repo)


@pytest.fixture
def tracking_server():
    try:
        server.postgres_binary("pg_ctl")
    except Exception as exc:
        pytest.skip(f"{exc} (.ci/run installs it)")
    state = Path(tempfile.mkdtemp(prefix="aepipe-server-"))
    state.chmod(0o755)  # PostgreSQL runs as `postgres` and must reach its data directory
    config = server.ServerConfig(state_dir=state, port=free_port(), db_port=free_port())
    seconds = server.start(config)
    yield config, seconds
    server.stop(config)
    shutil.rmtree(state, ignore_errors=True)


def test_pipeline_logs_to_the_postgres_server_and_registers_the_denoiser(tracking_server, tmp_path):
    import mlflow

    config, seconds = tracking_server
    print(f"server ready in {seconds:.1f} s")
    repo = copy_repo(tmp_path / "repo", merge(default_params(), TINY_PARAMS))
    env = pipeline_env({"MLFLOW_TRACKING_URI": config.uri})
    run(["dvc", "repro"], repo, env=env)
    assert not (repo / "mlflow.db").exists()

    client = mlflow.MlflowClient(tracking_uri=config.uri)
    experiment = client.get_experiment_by_name("autoencoder")
    runs = client.search_runs([experiment.experiment_id])
    stages = sorted(r.data.tags.get("dvc.stage", "") for r in runs)
    assert stages == ["", "evaluate", "train_basic", "train_denoise"]  # "" is the parent run
    md5 = lock_out_md5(repo, "train_denoise", "models/denoise.keras")
    train = next(r for r in runs if r.data.tags.get("dvc.stage") == "train_denoise")
    copy = mlflow.artifacts.download_artifacts(
        run_id=train.info.run_id,
        artifact_path="dvc_outputs/models/denoise.keras",
        dst_path=str(tmp_path / "download"),
        tracking_uri=config.uri,
    )
    assert dvc_md5(copy) == md5
    assert list(config.artifacts.rglob("denoise.keras"))  # stored by the server

    alias = register.champion_alias(load_params(repo / "params.yaml"))
    assert alias == "champion-noise0_4-seed1-test128"
    version = client.get_model_version_by_alias("aepipe-denoiser", alias)
    assert version.tags["dvc.out.models/denoise.keras"] == md5
    assert version.tags["mlflow.train_run"] == train.info.run_id
    verified = run(["aepipe", "verify"], repo, env=env)
    assert "as MLflow Keras model of run" in verified.stdout and verified.returncode == 0


def test_server_stop_ends_every_process_it_started(tmp_path):
    try:
        server.postgres_binary("pg_ctl")
    except Exception as exc:
        pytest.skip(str(exc))
    state = Path(tempfile.mkdtemp(prefix="aepipe-server-"))
    state.chmod(0o755)
    config = server.ServerConfig(state_dir=state, port=free_port(), db_port=free_port())
    try:
        server.start(config)
        group = int(config.pid_file.read_text())
        assert "answering" in server.status(config)
    finally:
        server.stop(config)
    assert not server.answers(config.uri)
    alive = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True)
    assert alive.stdout.strip() == ""
    assert "stopped" in server.status(config)
    assert not os.path.exists(config.pid_file)
    shutil.rmtree(state, ignore_errors=True)


def test_as_root_postgres_runs_through_runuser_found_off_path(monkeypatch):
    monkeypatch.setattr(server.os, "geteuid", lambda: 0)
    searched = []

    def which(name, path=None):
        searched.append(path)
        return "/usr/sbin/runuser" if path == "/usr/sbin:/sbin" else None

    monkeypatch.setattr(server.shutil, "which", which)
    assert server._as_postgres(["pg_ctl", "status"]) == [
        "/usr/sbin/runuser",
        "-u",
        "postgres",
        "--",
        "pg_ctl",
        "status",
    ]
    assert searched == [None, "/usr/sbin:/sbin"]
    monkeypatch.setattr(server.shutil, "which", lambda name, path=None: None)
    with pytest.raises(server.PipelineError, match="needs `runuser`"):
        server._as_postgres(["pg_ctl", "status"])
    monkeypatch.setattr(server.os, "geteuid", lambda: 1000)
    assert server._as_postgres(["pg_ctl", "status"]) == ["pg_ctl", "status"]
