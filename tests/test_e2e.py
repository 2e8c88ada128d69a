"""The real `dvc repro` / `dvc exp run` on tiny params, in a temporary copy of the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.fsutil import dvc_md5
from tests.conftest import TINY_PARAMS, copy_repo, default_params, lock_out_md5, merge, run, runs_of

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


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> tuple[Path, str]:
    repo = copy_repo(tmp_path_factory.mktemp("e2e") / "repo", merge(default_params(), TINY_PARAMS))
    result = run(["dvc", "repro"], repo)
    return repo, result.stdout


def lock_md5s(repo: Path) -> dict[tuple[str, str], str]:
    """(stage, path) -> md5 for every dep and out in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        (stage, entry["path"]): entry["md5"]
        for stage, body in lock["stages"].items()
        for entry in body.get("deps", []) + body.get("outs", [])
    }


def mlflow_runs(repo: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["autoencoder"], output_format="list")


def test_every_stage_ran_and_wrote_its_outputs(reproduced):
    repo, stdout = reproduced
    for stage in STAGES:
        assert f"Running stage '{stage}'" in stdout
    for name in ("basic", "denoise"):
        assert (repo / f"models/{name}.keras").stat().st_size > 10_000
    history = (repo / "reports/train_denoise/history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,val_loss" and len(history) == 3
    figures = {p.name for p in (repo / "reports/figures").iterdir()}
    assert figures == {
        f"{name}.png"
        for name in (
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
    }
    robustness = (repo / "reports/robustness.csv").read_text().splitlines()
    assert robustness[0] == "noise_factor,denoiser_psnr,baseline_psnr,noisy_psnr"
    assert [line.split(",")[0] for line in robustness[1:]] == ["0.2", "0.6"]


def test_metrics_rank_the_denoiser_above_doing_nothing(reproduced):
    repo, _ = reproduced
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
    shown = run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "denoiser_on_noisy" in shown


def test_a_second_repro_has_nothing_to_do(reproduced):
    repo, _ = reproduced
    before = (repo / "dvc.lock").read_bytes()
    stdout = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in stdout
    assert (repo / "dvc.lock").read_bytes() == before


def test_register_leaves_a_receipt_without_which_dvc_reruns_it(reproduced):
    """In a fresh clone every input matches dvc.lock; only the missing receipt makes DVC
    register the model in the clone's (empty) registry."""
    repo, _ = reproduced
    receipt = repo / "reports/registry_candidate.json"
    candidate = json.loads(receipt.read_text())
    assert candidate["models/denoise.keras"] == dvc_md5(repo / "models/denoise.keras")
    assert candidate["alias"] == "champion-noise0_4-seed1-test128"
    saved = receipt.read_bytes()
    receipt.unlink()
    try:
        status = run(["dvc", "status", "register"], repo).stdout
        assert "deleted:" in status and "registry_candidate.json" in status
    finally:
        receipt.write_bytes(saved)
    assert "register" not in run(["dvc", "status"], repo).stdout


def test_mlflow_runs_carry_params_metrics_artifacts_and_lineage(reproduced):
    import mlflow

    repo, _ = reproduced
    runs = {r.info.run_name: r for r in mlflow_runs(repo)}
    stage_runs = [runs[name] for name in ("train_basic", "train_denoise", "evaluate")]
    parents = [r for r in runs.values() if r.data.tags.get("aepipe.role") == "pipeline"]
    assert len(runs) == 4 and len(parents) == 1
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    group = parents[0].data.tags["aepipe.pipeline_run"]
    lock = lock_md5s(repo)
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
            assert lock[(stage, path)] == md5, (stage, path)

    basic = runs["train_basic"]
    losses = client.get_metric_history(basic.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(basic.info.run_id, "dvc_outputs/models")}
    assert artifacts == {"dvc_outputs/models/basic.keras"}
    models = mlflow.search_logged_models(
        experiment_ids=[basic.info.experiment_id], output_format="list"
    )
    logged = {m.source_run_id: m for m in models}
    assert set(logged) == {runs["train_basic"].info.run_id, runs["train_denoise"].info.run_id}
    info = mlflow.models.get_model_info(logged[basic.info.run_id].model_uri)
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 784)
    assert "keras" in info.flavors
    assert "denoiser_on_noisy.psnr" in runs["evaluate"].data.metrics


def test_an_experiment_reruns_only_what_its_param_feeds(reproduced):
    repo, _ = reproduced
    stdout = run(
        ["dvc", "exp", "run", "-n", "longer-denoise", "-S", "train_denoise.epochs=3"], repo
    ).stdout
    assert "Stage 'train_basic' didn't change" in stdout
    assert "Running stage 'train_denoise'" in stdout
    latest = next(r for r in mlflow_runs(repo) if r.info.run_name == "train_denoise")
    assert latest.data.tags["dvc.exp_name"] == "longer-denoise"
    assert latest.data.params["train_denoise.epochs"] == "3"
    shown = run(["dvc", "exp", "show", "--json"], repo).stdout
    assert "longer-denoise" in shown


def test_a_diverging_run_fails_fast_and_dvc_checkout_restores_the_last_good_model(reproduced):
    repo, _ = reproduced
    good = lock_out_md5(repo, "train_basic", "models/basic.keras")
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["train_basic"]["learning_rate"] = 1e6
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    failed = run(["dvc", "repro", "train_basic"], repo, check=False)
    assert failed.returncode != 0
    assert "aepipe train: error: training diverged: loss" in failed.stderr
    assert "lower the learning rate (currently 1e+06)" in failed.stderr
    assert runs_of(repo, "train_basic")[-1].info.status == "FAILED"
    assert not (repo / "models/basic.keras").exists()  # DVC removed it before the run

    (repo / "params.yaml").write_text(original)
    run(["dvc", "checkout"], repo)  # the README's restore command
    assert dvc_md5(repo / "models/basic.keras") == good
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout


def test_a_convolutional_experiment_runs_end_to_end(reproduced):
    repo, _ = reproduced
    stdout = run(["dvc", "exp", "run", "-n", "conv", "-S", "model.kind=conv"], repo).stdout
    assert "Running stage 'train_basic'" in stdout and "Running stage 'evaluate'" in stdout
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["model_kind"] == "conv" and "autoencoder" in metrics["denoisers"]
    diff = run(["dvc", "metrics", "diff", "--json"], repo).stdout
    assert "denoiser_on_noisy.psnr" in diff
    train = runs_of(repo, "train_basic")[-1]
    assert train.data.params["model.kind"] == "conv" and train.data.tags["dvc.exp_name"] == "conv"
