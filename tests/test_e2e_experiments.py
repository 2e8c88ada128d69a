"""End to end, many experiments: two queued on two DVC queue workers, and an `aepipe sweep` of 2
settings x 2 seeds on a simulated two-node Ray cluster, with a bare git remote, a local DVC
remote and a tracking server; in a tiny reproduced copy of the repository of their own (a file
of its own, so that pytest-xdist runs it beside `test_e2e.py`)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import (
    free_port,
    lock_out_md5,
    mlflow_server,
    outs,
    pipeline_env,
    processes_running,
    queue_started,
    run,
    runs_of,
    stop_server,
    tiny_repository,
    wait_for_queue,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return tiny_repository(tmp_path_factory.mktemp("queue") / "repo", tmp_path_factory)


def test_queued_experiments_on_two_workers_land_in_one_mlflow_store(repo):
    # Experiments that rerun `evaluate` alone: a queue's mechanics, at low cost. The number of
    # images shown changes only figures, so each also reruns evaluate's numbers from scratch.
    for name, shown in (("shown-1", 1), ("shown-3", 3)):
        queued = ["dvc", "exp", "run", "--queue", "-n", name, "-S", f"evaluate.n_examples={shown}"]
        run([*queued, "evaluate"], repo)  # up to evaluate: the stage that logs
    with queue_started(repo):
        status = wait_for_queue(repo, ("shown-1", "shown-3"))
    assert status.count("Success") == 2, (
        status + run(["dvc", "queue", "logs", "shown-1"], repo, check=False).stdout
    )
    names = [r.data.tags.get("dvc.exp_name") for r in runs_of(repo, "evaluate")]
    assert names.count("shown-1") == 1 and names.count("shown-3") == 1, names
    assert not list(repo.glob(".dvc/tmp/exps/*/mlflow.db")), "a run logged inside a temp copy"
    rows = {
        row["experiment"]: row
        for row in json.loads(
            run(["aepipe", "compare", "--experiments", "--format", "json"], repo).stdout
        )
    }
    assert rows["shown-1"]["evaluate.n_examples"] == 1
    assert rows["shown-3"]["evaluate.n_examples"] == 3
    for name in ("shown-1", "shown-3"):
        assert rows[name]["mlflow_run"].startswith("http://127.0.0.1:5000/#/experiments/")
    # The number of images shown changes no score: one configuration, and one run per seed.
    compared = run(["aepipe", "compare", "--format", "json", "--log"], repo)
    [baseline] = json.loads(compared.stdout)[:1]
    assert baseline["configuration"] == "baseline" and baseline["n"] == 1
    assert len(json.loads(compared.stdout)) == 3  # one row per metric
    logged = [r for r in runs_of(repo) if r.data.tags.get("aepipe.role") == "comparison"]
    assert len(logged) == 1 and "shown-1" in logged[0].data.tags["aepipe.compared"]
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # the workspace untouched
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout.split()
    for ref in refs:
        evaluated = outs(
            yaml.safe_load(run(["git", "show", f"{ref}:dvc.lock"], repo).stdout)["stages"][
                "evaluate"
            ]
        )
        for table in ("reports/metrics.json", "reports/denoisers.csv", "reports/robustness.csv"):
            assert evaluated[table] == lock_out_md5(repo, "evaluate", table), (ref, table)


@pytest.fixture(scope="module")
def remotes(repo, tmp_path_factory):
    """The team's shared pieces: a bare git remote holding the commit, a DVC remote (set only in
    .dvc/config.local, which a clone lacks), and an MLflow tracking server."""
    shared = tmp_path_factory.mktemp("shared")
    run(["git", "init", "-q", "--bare", str(shared / "origin.git")], shared)
    run(["git", "remote", "add", "origin", str(shared / "origin.git")], repo)
    run(["git", "push", "-q", "-u", "origin", "HEAD:main"], repo)
    run(["dvc", "remote", "add", "--local", "-d", "-f", "team", str(shared / "dvc")], repo)
    port = free_port()
    server = mlflow_server(shared, port)
    yield shared, f"http://127.0.0.1:{port}"
    stop_server(server)


@pytest.fixture(scope="module")
def two_nodes():
    """A Ray cluster of two nodes of one CPU each, simulated on this machine."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    yield cluster
    cluster.shutdown()


SWEEP = ["--name", "ev", "--seeds", "0", "1", "-S", "train_denoise.learning_rate=0.002,0.003"]
CELLS = {f"ev-{setting}-seed{seed}" for setting in (1, 2) for seed in (0, 1)}


def supervised_cells() -> list[psutil.Process]:
    """The processes that supervise a cell's experiment on a worker (this test's cluster)."""
    return processes_running("from pipeline.experiments.cells import supervise")


def test_a_sweep_on_two_nodes_survives_a_killed_worker_and_reruns_nothing(
    repo, remotes, two_nodes, tmp_path
):
    shared, tracking = remotes
    env = pipeline_env({"MLFLOW_TRACKING_URI": tracking})
    command = ["python", "-m", "pipeline", "sweep", *SWEEP, "--address", two_nodes.address]
    driver = subprocess.Popen(
        command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    # A worker killed in the middle of a cell (its experiment's first stage running): Ray
    # retries the cell, whose supervisor ended the experiment and removed its clone.
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        for supervisor in supervised_cells():
            with contextlib.suppress(psutil.Error):
                if processes_running("pipeline.stages.", supervisor.children(recursive=True)):
                    killed = psutil.Process(supervisor.ppid())
                    killed.kill()
                    break
        time.sleep(0.5)
    output = driver.communicate(timeout=1800)[0]
    assert killed is not None, output
    assert driver.returncode == 0, output
    refs = run(["git", "ls-remote", str(shared / "origin.git"), "refs/exps/*"], repo).stdout
    assert sorted(line.rsplit("/", 1)[1] for line in refs.splitlines()) == sorted(CELLS)
    assert "| 2 | 0 1 |" in output and output.count("| 2 | 0 1 |") == 2  # two configurations
    assert not list(Path("/tmp").glob("aepipe-sweep-ev-*"))  # no scratch clone left

    import mlflow

    client = mlflow.MlflowClient(tracking)
    [experiment] = [e for e in client.search_experiments() if e.name == "autoencoder"]
    [parent] = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`aepipe.role` = 'sweep'"
    )
    assert parent.info.status == "FINISHED" and parent.info.run_name == "ev"
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(c.data.tags["dvc.exp_name"] for c in finished) == sorted(CELLS)
    assert {c.info.status for c in children} <= {"FINISHED", "KILLED"}
    running = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    assert running == []
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")} >= {
        "comparison/comparison.md",
        "comparison/comparison.png",
    }

    again = run(command, repo, env=env).stdout
    assert "all on origin already: nothing to run" in again and "Running stage" not in again

    # Any clone compares the sweep, pulling its experiments from the remotes.
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", "-b", "main", str(shared / "origin.git"), str(clone)], tmp_path)
    run(["dvc", "remote", "add", "--local", "-d", "-f", "team", str(shared / "dvc")], clone)
    compared = run(["aepipe", "compare", "--sweep", "ev", "--format", "json"], clone, env=env)
    rows = json.loads(compared.stdout)
    assert {row["n"] for row in rows} == {2} and len(rows) == 6  # 2 configurations x 3 metrics
