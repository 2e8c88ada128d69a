"""The model registry: every new denoiser becomes a version of `aepipe-denoiser`, with its lineage
tags; the benchmark's champion alias moves to it only when its gain is beyond seed noise.

PSNRs are only comparable on the same benchmark (`evaluation.benchmark`), so each benchmark has
its own champion, under the alias `champion-<benchmark>`, e.g.
`champion-noise0_4-seed1-test10000-v2` for the defaults.

The rule, against the current champion:
- a candidate of the champion's own configuration (the same params but the seed and those that
  change no score, `tags.NOT_CONFIGURATION`, trained by the same code) never takes the alias:
  another seed is not an improvement;
- where both configurations have replicates on this benchmark (evaluate runs over at least two
  training seeds each, same params and training code), the lower end of the 95% interval of the
  difference of their mean scores must be above zero (paired by seed when both ran the same
  seeds, Welch's otherwise), and the candidate itself must score above the champion;
- otherwise the candidate's score must beat the champion's by the benchmark's seed spread: the
  largest range over seeds measured in the store for this benchmark, or recorded in
  `SEED_SPREAD_DB`, whichever is larger (the largest recorded one when neither exists).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import Params
from pipeline.core.errors import TrackingError
from pipeline.evaluation import replicates
from pipeline.evaluation.benchmark import SCORE, benchmark_name
from pipeline.tracking.finder import RunFinder
from pipeline.tracking.store import store_lock
from pipeline.tracking.tags import (
    TAG_BENCHMARK,
    TAG_OUT,
    TAG_REPLICATE_GROUP,
    TAG_STAGE,
    TAG_TRAINING_CODE,
)

MODEL_NAME = "aepipe-denoiser"

# Range (max - min) of the denoiser's test PSNR over training seeds 0-4 with every other param at
# its default (19.4184 to 19.5456 dB; `aepipe replicate --seeds 0 1 2 3 4`, README). Benchmarks
# not measured here use the largest recorded range.
SEED_SPREAD_DB = {
    "noise0_4-seed1-test10000-v2": 0.1272,
}


def champion_alias(params: Params) -> str:
    return f"champion-{benchmark_name(params)}"


def seed_spread(benchmark: str, measured: float = 0.0) -> tuple[float, str]:
    """The margin a single-seed gain must exceed on `benchmark`, and where it comes from:
    `measured` (the largest range over seeds of one configuration in the store) or the recorded
    spread, whichever is larger."""
    recorded = SEED_SPREAD_DB.get(benchmark, 0.0)
    if measured > recorded:
        return measured, "the seed spread measured in the store for this benchmark"
    if benchmark in SEED_SPREAD_DB:
        return recorded, "the seed spread recorded for this benchmark"
    largest = max(SEED_SPREAD_DB, key=SEED_SPREAD_DB.__getitem__)
    return SEED_SPREAD_DB[largest], f"the largest recorded seed spread ({largest})"


@dataclass(frozen=True)
class Candidate:
    path: str  # the model file, as dvc.lock names it
    md5: str
    score: float  # SCORE
    group: str  # replicate group of its params
    code: str  # training code, `tags.training_code`
    benchmark: str
    tags: dict[str, str]  # more tags for the version (SSIM, model kind)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def benchmark_scores(runs: RunFinder, benchmark: str) -> dict[tuple[str, str], dict[int, float]]:
    """(replicate group, training code) -> seed -> SCORE, from the finished evaluate runs on one
    benchmark (the latest run of each seed)."""
    query = (
        f"tags.`{TAG_STAGE}` = 'evaluate' and tags.`{TAG_BENCHMARK}` = '{benchmark}' "
        "and attributes.status = 'FINISHED'"
    )
    found = runs.client.search_runs(
        [runs.experiment_id],
        filter_string=query,
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    scores: dict[tuple[str, str], dict[int, float]] = {}
    for run in found:
        tags, seed = run.data.tags, run.data.params.get("seed", "")
        score = run.data.metrics.get(SCORE)
        if score is None or not math.isfinite(score) or not seed.isdigit():
            continue
        key = (tags.get(TAG_REPLICATE_GROUP, ""), tags.get(TAG_TRAINING_CODE, ""))
        scores.setdefault(key, {})[int(seed)] = float(score)
    return scores


def measured_spread(scores: dict[tuple[str, str], dict[int, float]]) -> float:
    """The largest range over seeds of one configuration (at least two seeds)."""
    ranges = [max(s.values()) - min(s.values()) for s in scores.values() if len(s) >= 2]
    return max(ranges, default=0.0)


def decide(
    candidate: Candidate,
    champion_score: float | None,
    champion_config: tuple[str | None, str | None] = (None, None),
    evidence: tuple[dict[int, float], dict[int, float]] = ({}, {}),
    measured: float = 0.0,
) -> Decision:
    """Whether the candidate takes the alias. `champion_config` is the champion's (replicate
    group, training code); `evidence` the replicate scores (seed -> score) of the candidate's and
    the champion's configurations; `measured` the seed spread measured on the benchmark."""
    if not math.isfinite(candidate.score):
        return Decision(False, f"{SCORE} is {candidate.score}: not a score")
    if champion_score is None:
        return Decision(True, "no champion yet")
    if champion_config == (candidate.group, candidate.code):
        return Decision(
            False,
            "same configuration as the champion (params differ in seed only, same training "
            "code): another seed is not an improvement",
        )
    ours, theirs = evidence
    if len(ours) >= 2 and len(theirs) >= 2:
        gain = replicates.difference(ours, theirs)
        interval = (
            f"gain {gain.estimate:+.4f} dB, 95% interval [{gain.low:+.4f}, {gain.high:+.4f}] "
            f"({gain.test}, {len(ours)} vs {len(theirs)} seeds)"
        )
        if not gain.low > 0:
            return Decision(False, f"{interval}: within seed noise")
        if candidate.score <= champion_score:
            return Decision(
                False, f"{interval}, but this seed's model scores below the champion itself"
            )
        return Decision(True, interval)
    margin, source = seed_spread(candidate.benchmark, measured)
    gain = candidate.score - champion_score
    single = f"gain {gain:+.4f} dB over one seed"
    if gain <= 0:
        return Decision(False, f"{single}: not an improvement")
    if gain > margin:
        return Decision(True, f"{single}, beyond {source} ({margin:.4f} dB)")
    return Decision(
        False,
        f"{single}, not beyond {source} ({margin:.4f} dB); replicates of both configurations "
        "would settle it (aepipe replicate)",
    )


def _tag_float(version: Any, key: str) -> float | None:
    try:
        return float(version.tags[key])
    except (KeyError, TypeError, ValueError):
        return None


def _registered(client: Any, candidate: Candidate) -> Any | None:
    """The version that already holds this exact model file, if any."""
    query = f"name = '{MODEL_NAME}' and tag.`{TAG_OUT}{candidate.path}` = '{candidate.md5}'"
    try:
        found = client.search_model_versions(query)
    except Exception:  # a store without tag search: register again
        return None
    return found[0] if found else None


def register(runs: RunFinder, candidate: Candidate, alias: str) -> str:
    """Register the candidate (once per model file) and move `alias` to it if `decide` says so;
    return what happened, in one line."""
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
        best = _tag_float(champion, SCORE) if champion else None
        if champion is not None and best is None:
            return (
                f"the champion, version {champion.version}, has no readable {SCORE} tag, so no "
                f"gain can be measured; registry unchanged (tag it, or move @{alias} by hand)"
            )
        tags = champion.tags if champion else {}
        champion_config = (tags.get(TAG_REPLICATE_GROUP), tags.get(TAG_TRAINING_CODE))
        scores = benchmark_scores(runs, candidate.benchmark)
        evidence = (
            scores.get((candidate.group, candidate.code), {}),
            scores.get(champion_config, {}) if None not in champion_config else {},
        )
        decision = decide(candidate, best, champion_config, evidence, measured_spread(scores))
        version = _registered(client, candidate)
        if version is None:
            version = mlflow.register_model(
                _logged_model_uri(runs, producing[0]["run_id"]),
                MODEL_NAME,
                tags=_version_tags(candidate, producing[0]),
            )
        if champion is not None and champion.version == version.version:
            return f"{MODEL_NAME} version {version.version} is already @{alias}"
        if decision.promote:
            client.set_registered_model_alias(MODEL_NAME, alias, version.version)
    score = f"{SCORE} {candidate.score:.4f}"
    if decision.promote:
        was = f", was {best:.4f}" if best is not None else ""
        return (
            f"{MODEL_NAME} version {version.version} ({score}{was}) is now @{alias}: "
            f"{decision.reason}"
        )
    return (
        f"{MODEL_NAME} version {version.version} ({score}) registered without @{alias} "
        f"(version {champion.version}, {best:.4f}): {decision.reason}"
    )


def _logged_model_uri(runs: RunFinder, run_id: str) -> str:
    logged = runs.logged_model(run_id)
    if logged is None:
        raise TrackingError(f"MLflow run {run_id} logged no model to register")
    return logged.model_uri


def _version_tags(candidate: Candidate, train_run: dict[str, str]) -> dict[str, str]:
    return {
        SCORE: str(candidate.score),
        **candidate.tags,
        f"{TAG_OUT}{candidate.path}": candidate.md5,
        TAG_REPLICATE_GROUP: candidate.group,
        TAG_TRAINING_CODE: candidate.code,
        TAG_BENCHMARK: candidate.benchmark,
        "mlflow.train_run": train_run["run_id"],
        "git.commit": train_run["git_commit"],
        "git.dirty": train_run["git_dirty"],
        "dvc.exp_name": train_run["dvc_experiment"],
    }
