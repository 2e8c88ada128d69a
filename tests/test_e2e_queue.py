"""End to end: two experiments queued on two DVC queue workers, in a tiny reproduced copy of the
repository of their own (a file of its own, so that pytest-xdist runs it beside `test_e2e.py`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    TINY_PARAMS,
    default_params,
    lock_out_md5,
    merge,
    outs,
    reproduced,
    run,
    runs_of,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return reproduced(
        tmp_path_factory.mktemp("queue") / "repo", merge(default_params(), TINY_PARAMS)
    )


def test_queued_experiments_on_two_workers_land_in_one_mlflow_store(repo):
    # Experiments that rerun `evaluate` alone: a queue's mechanics, at low cost. The number of
    # images shown changes only figures, so each also reruns evaluate's numbers from scratch.
    for name, shown in (("shown-1", 1), ("shown-3", 3)):
        queued = ["dvc", "exp", "run", "--queue", "-n", name, "-S", f"evaluate.n_examples={shown}"]
        run([*queued, "evaluate"], repo)  # up to evaluate: the stage that logs
    run(["dvc", "queue", "start", "-j", "2"], repo)
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


def wait_for_queue(repo: Path, names: tuple[str, ...], limit_s: float = 900) -> str:
    """`dvc queue status` once the named experiments are done. Until then, a cheap look at
    git's experiment refs every second, and DVC's own status (1.5 s of CPU each, taken from the
    experiments) only every 15 s, to notice a failure."""
    deadline = time.monotonic() + limit_s
    checked = time.monotonic()
    while time.monotonic() < deadline:
        refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout
        if all(f"/{name}\n" in refs for name in names):
            break
        if time.monotonic() - checked > 15:
            checked = time.monotonic()
            status = run(["dvc", "queue", "status"], repo).stdout
            if "Queued" not in status and "Running" not in status:
                return status
        time.sleep(1)
    while True:  # the refs come just before DVC marks the tasks done
        status = run(["dvc", "queue", "status"], repo).stdout
        if ("Queued" not in status and "Running" not in status) or time.monotonic() > deadline:
            return status
        time.sleep(1)
