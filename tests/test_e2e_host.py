"""The real stages through a real stage host: the same bytes as a cold start, for every stage and
every model kind, and a queued experiment's stages served too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    pipeline_env,
    queue_started,
    run,
    runs_of,
    tiny_repository,
    wait_for_queue,
)

pytestmark = pytest.mark.e2e

TENSORFLOW_STAGES = (
    "pipeline.stages.train basic",
    "pipeline.stages.train denoise",
    "pipeline.stages.baselines",
    "pipeline.stages.evaluate",
    "pipeline.stages.register",
)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """(repository, environment whose stages start warm, host log); the host stops after."""
    repo = tiny_repository(tmp_path_factory.mktemp("host") / "repo", tmp_path_factory)
    hosts = tmp_path_factory.mktemp("hosts")
    env = pipeline_env({"AEPIPE_HOST": "on", "AEPIPE_HOST_DIR": str(hosts)})
    started = run([sys.executable, "-m", "pipeline", "host", "start"], repo, env=env).stdout
    assert "stage host up" in started
    host = psutil.Process(json.loads(next(hosts.glob("*.json")).read_text())["pid"])
    yield repo, env, next(hosts.glob("*.log"))
    run([sys.executable, "-m", "pipeline", "host", "stop"], repo, env=env)
    _, alive = psutil.wait_procs([host], timeout=120)
    assert alive == []


def lock(repo: Path) -> str:
    return (repo / "dvc.lock").read_text()


def test_every_stage_run_warm_writes_what_the_cold_run_wrote(warm):
    repo, env, log = warm
    cold = lock(repo)  # committed after a cold `dvc repro`
    before = len(runs_of(repo))
    run(["dvc", "repro", "--force"], repo, env=env)
    assert lock(repo) == cold  # every output byte-identical (dvc.lock holds their md5s)
    served = log.read_text()
    for stage in TENSORFLOW_STAGES:
        assert f"{stage} in {repo}" in served
    new = runs_of(repo)[before:]
    assert new and {r.info.status for r in new} == {"FINISHED"}


@pytest.mark.parametrize("kind", ["conv", "vae"])
def test_each_model_kind_trains_to_the_same_bytes_warm_and_cold(warm, kind):
    """The denoiser of each kind (from scratch: one stage, the kind's whole training code)."""
    repo, env, log = warm
    kind_params = ["-S", f"model.kind={kind}", "-S", "train_denoise.init_from=scratch"]
    run(["dvc", "exp", "run", *kind_params, "--single-item", "train_denoise"], repo)  # cold
    try:
        cold = (repo / "models/denoise.keras").read_bytes()
        served = log.read_text().count(f"pipeline.stages.train denoise in {repo}\n")
        run(["dvc", "repro", "--force", "--single-item", "train_denoise"], repo, env=env)
        assert (repo / "models/denoise.keras").read_bytes() == cold
        assert log.read_text().count(f"pipeline.stages.train denoise in {repo}\n") == served + 1
    finally:
        run(["git", "checkout", "--", "params.yaml", "dvc.lock"], repo)
        run(["dvc", "checkout", "--force"], repo)


def test_a_queued_experiment_runs_its_stages_in_the_host(warm):
    repo, env, log = warm
    run(["dvc", "exp", "run", "--queue", "-n", "warm-3", "-S", "train_denoise.epochs=3"], repo)
    with queue_started(repo, env):
        status = wait_for_queue(repo, ("warm-3",))
    assert "Success" in status, status + run(["dvc", "queue", "logs", "warm-3"], repo).stdout
    served = log.read_text()
    for stage in ("pipeline.stages.train denoise", "pipeline.stages.evaluate"):
        assert f"{stage} in {repo}/.dvc/tmp/exps/" in served, served
