"""The model registry: a denoiser becomes a new version of `aepipe-denoiser`, with its lineage
tags, and takes its benchmark's champion alias only when it scores better.

PSNRs are only comparable on the same test: the same test images, the same noise (factor, seed,
and the way the noise is drawn), the same metric. So each such benchmark has its own champion,
under the alias `champion-<benchmark>`, e.g. `champion-noise0_4-seed1-test10000-v2` for the
defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.config import Params
from pipeline.core.errors import TrackingError
from pipeline.tracking.finder import RunFinder
from pipeline.tracking.store import store_lock
from pipeline.tracking.tags import TAG_OUT

# What else defines a benchmark, besides its params; bump it when any of these changes:
# the test images (the first data.test_size of MNIST's test set, scaled by /255), how the noise is
# drawn (2: one stream per split; 1: one generator for train, test and tuning in turn), and the
# score (PSNR of each image, data range 1, capped at 100 dB, averaged).
BENCHMARK_VERSION = 2
MODEL_NAME = "aepipe-denoiser"
SCORE = "denoiser_on_noisy.psnr"
MIN_GAIN_DB = 0.01


def champion_alias(params: Params) -> str:
    """The alias of the champion of this benchmark: the noise factor (exactly, as the shortest
    text that reads back as the same number), its seed, the test images, and the version."""
    benchmark = (
        f"noise{params.noise.factor!r}-seed{params.noise.seed}-test{params.data.test_size}"
        f"-v{BENCHMARK_VERSION}"
    )
    return "champion-" + benchmark.replace(".", "_")  # aliases allow letters, digits, _ and -


def improves(candidate: float, champion: float | None) -> bool:
    """Better by a margin that is not float noise (a rerun on two workers differs by ~1e-6 dB)."""
    return champion is None or candidate > champion + MIN_GAIN_DB


@dataclass(frozen=True)
class Candidate:
    path: str  # the model file, as dvc.lock names it
    md5: str
    score: float  # SCORE
    tags: dict[str, str]  # more tags for the version (SSIM, model kind)


def _champion_score(champion: Any) -> float | None:
    try:
        return float(champion.tags[SCORE])
    except (KeyError, TypeError, ValueError):
        return None


def register(runs: RunFinder, candidate: Candidate, alias: str) -> str:
    """Register the candidate if it beats the champion of `alias`; return what happened."""
    import mlflow

    producing = runs.producing(candidate.path, candidate.md5)
    if not producing:
        raise TrackingError(
            f"no MLflow run records {candidate.path} with md5 {candidate.md5}: nothing to register"
        )
    client = runs.client
    with store_lock():
        try:
            champion = client.get_model_version_by_alias(MODEL_NAME, alias)
        except mlflow.exceptions.MlflowException:
            champion = None
        best = _champion_score(champion) if champion else None
        if champion is not None and best is None:
            return (
                f"the champion, version {champion.version}, has no readable {SCORE} tag, so no "
                f"gain can be measured; registry unchanged (tag it, or move @{alias} by hand)"
            )
        if not improves(candidate.score, best):
            return (
                f"{SCORE} {candidate.score:.4f} does not beat version {champion.version} "
                f"({best:.4f}) by {MIN_GAIN_DB} dB; registry unchanged"
            )
        train_run = producing[0]
        logged = runs.logged_model(train_run["run_id"])
        if logged is None:
            raise TrackingError(f"MLflow run {train_run['run_id']} logged no model to register")
        tags = {
            SCORE: str(candidate.score),
            **candidate.tags,
            f"{TAG_OUT}{candidate.path}": candidate.md5,
            "mlflow.train_run": train_run["run_id"],
            "git.commit": train_run["git_commit"],
            "git.dirty": train_run["git_dirty"],
            "dvc.exp_name": train_run["dvc_experiment"],
        }
        version = mlflow.register_model(logged.model_uri, MODEL_NAME, tags=tags)
        client.set_registered_model_alias(MODEL_NAME, alias, version.version)
    was = f", was {best:.4f}" if best is not None else ""
    score = f"{SCORE} {candidate.score:.4f}{was}"
    return f"{MODEL_NAME} version {version.version} ({score}) is now @{alias}"
