"""Stage `register`: the denoiser becomes a new version in the MLflow model registry, with its
lineage tags, only when its test PSNR beats the current champion's.

PSNRs are only comparable on the same test: the same noise (factor and seed) on the same test
images. So the registered model `aepipe-denoiser` has one champion per such benchmark, under the
alias `champion-<benchmark>`, e.g. `champion-noise0_4-seed1-test10000` for the defaults.

The registry lives outside the workspace, so the stage also writes
`reports/registry_candidate.json`: what it put to the registry (model md5, score, alias). Without
an output, DVC would skip the stage in a fresh clone whose inputs match `dvc.lock`, and the new
registry would stay empty. The file holds only what the inputs determine; the registry's answer
(which version, if any) is printed and kept in MLflow.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline import paths, tracking
from pipeline.config import Params
from pipeline.errors import DataError, TrackingError
from pipeline.fsutil import dvc_md5, write_json_atomic

MODEL_NAME = "aepipe-denoiser"
SCORE = "denoiser_on_noisy.psnr"
DENOISER = paths.model_file("denoise")
CANDIDATE_FILE = paths.REPORTS_DIR / "registry_candidate.json"
MIN_GAIN_DB = 0.01


def champion_alias(params: Params) -> str:
    benchmark = f"noise{params.noise.factor:g}-seed{params.noise.seed}-test{params.data.test_size}"
    return "champion-" + benchmark.replace(".", "_")  # aliases allow letters, digits, _ and -


def improves(candidate: float, champion: float | None) -> bool:
    """Better by a margin that is not float noise (a rerun on two workers differs by ~1e-6 dB)."""
    return champion is None or candidate > champion + MIN_GAIN_DB


def _score(metrics: dict[str, Any]) -> float:
    group, name = SCORE.split(".")
    try:
        return float(metrics[group][name])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{paths.METRICS_FILE}: no {SCORE}; rerun `dvc repro evaluate`") from None


def run(params: Params) -> None:
    try:
        metrics = json.loads(paths.METRICS_FILE.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{paths.METRICS_FILE}: unreadable ({exc})") from None
    score, md5 = _score(metrics), dvc_md5(DENOISER)
    runs = tracking.RunFinder.open_existing()
    producing = runs.producing(DENOISER.as_posix(), md5) if runs else []
    if not producing:
        raise TrackingError(f"no MLflow run records {DENOISER} with md5 {md5}: nothing to register")
    import mlflow

    client = runs.client
    alias = champion_alias(params)
    with tracking.store_lock():
        try:
            champion = client.get_model_version_by_alias(MODEL_NAME, alias)
            best = float(champion.tags[SCORE])
        except mlflow.exceptions.MlflowException:
            champion, best = None, None
        if not improves(score, best):
            outcome = (
                f"{SCORE} {score:.4f} does not beat version {champion.version} "
                f"({best:.4f}) by {MIN_GAIN_DB} dB; registry unchanged"
            )
        else:
            train_run = producing[0]
            logged = runs.logged_model(train_run["run_id"])
            if logged is None:
                raise TrackingError(f"MLflow run {train_run['run_id']} logged no model to register")
            tags = {
                SCORE: str(score),
                "denoiser_on_noisy.ssim": str(metrics["denoiser_on_noisy"].get("ssim", "")),
                f"{tracking.TAG_OUT}{DENOISER.as_posix()}": md5,
                "mlflow.train_run": train_run["run_id"],
                "git.commit": train_run["git_commit"],
                "git.dirty": train_run["git_dirty"],
                "dvc.exp_name": train_run["dvc_experiment"],
                "model.kind": params.model.kind,
            }
            version = mlflow.register_model(logged.model_uri, MODEL_NAME, tags=tags)
            client.set_registered_model_alias(MODEL_NAME, alias, version.version)
            outcome = (
                f"{MODEL_NAME} version {version.version} ({SCORE} {score:.4f}"
                + (f", was {best:.4f}" if best is not None else "")
                + f") is now @{alias}"
            )
    candidate = {"model": MODEL_NAME, "alias": alias, SCORE: score, DENOISER.as_posix(): md5}
    write_json_atomic(CANDIDATE_FILE, candidate)
    print(f"register: {outcome}")
