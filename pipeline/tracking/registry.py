"""The model registry: every new denoiser becomes a version of `aepipe-denoiser`, with its lineage
tags; the benchmark's champion alias moves to it only when its gain is beyond seed noise.

PSNRs are only comparable on the same benchmark (`evaluation.benchmark`), so each benchmark has
its own champion, under the alias `champion-<benchmark>`, e.g.
`champion-noise0_4-seed1-test10000-v2` for the defaults, and a version is one model file as
scored on one benchmark: the same file evaluated on another benchmark is another version, with
that benchmark's score.

The rule, against the current champion:
- a candidate that does not score above the benchmark's noisy input (doing nothing) never takes
  the alias, even when there is no champion yet;
- a candidate of the champion's own configuration (the same params but the seed and those that
  change no score, `tags.NOT_CONFIGURATION`, trained by the same code) never takes the alias:
  another seed is not an improvement;
- where both configurations have replicates on this benchmark (evaluate runs over at least two
  training seeds each, same params and training code), the lower end of the 95% interval of the
  difference of their mean scores must be above zero (paired by seed when both ran the same
  seeds, Welch's otherwise), and the candidate itself must score above the champion;
- otherwise the candidate's score must beat the champion's by the benchmark's seed spread: the
  largest range over seeds measured in the store for this benchmark, or recorded in
  `SEED_SPREAD_DECIBELS`, whichever is larger (the largest recorded one when neither exists).

Decisions on one benchmark are taken one at a time, in the order of the versions' numbers, which
the registry hands out one by one also to registers on different machines: a version is created
with a `pending` decision tag naming its process, and its register waits until every earlier
version of the benchmark has been decided (or was abandoned by a register that died: its
process is gone, or it stayed pending for PENDING_TIMEOUT_S) before it reads the champion. Two
registers racing against one tracking server therefore decide as if one ran after the other.
One case is not ordered so: a register that finds its model file already registered on the
benchmark reuses that older version, and can decide beside a register of a newer version.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import psutil

from pipeline.core import processes
from pipeline.core.config import Params
from pipeline.core.errors import TrackingError
from pipeline.core.progress import Report, silent
from pipeline.evaluation import replicates
from pipeline.evaluation.benchmark import SCORE, benchmark_name
from pipeline.tracking.finder import RunFinder
from pipeline.tracking.store import store_errors, store_lock
from pipeline.tracking.tags import (
    TAG_BENCHMARK,
    TAG_OUT,
    TAG_REPLICATE_GROUP,
    TAG_STAGE,
    TAG_TRAINING_CODE,
)

MODEL_NAME = "aepipe-denoiser"
TAG_DECISION = "aepipe.decision"  # pending <process> <since>, or what its register decided
PENDING = "pending"
PENDING_TIMEOUT_S = 300.0  # a register decides in seconds; one pending this long has died
POLL_S = 0.5
MAX_TAG_LENGTH = 5000

# Range (max - min) of the denoiser's test PSNR over training seeds 0-4 with every other param at
# its default (19.4184 to 19.5456 dB; `aepipe replicate --seeds 0 1 2 3 4`, README). Benchmarks
# not measured here use the largest recorded range.
SEED_SPREAD_DECIBELS = {
    "noise0_4-seed1-test10000-v2": 0.1272,
}


def champion_alias(params: Params) -> str:
    return f"champion-{benchmark_name(params)}"


def seed_spread(benchmark: str, measured: float = 0.0) -> tuple[float, str]:
    """The margin a single-seed gain must exceed on `benchmark`, and where it comes from:
    `measured` (the largest range over seeds of one configuration in the store) or the recorded
    spread, whichever is larger."""
    recorded = SEED_SPREAD_DECIBELS.get(benchmark, 0.0)
    if measured > recorded:
        return measured, "the seed spread measured in the store for this benchmark"
    if benchmark in SEED_SPREAD_DECIBELS:
        return recorded, "the seed spread recorded for this benchmark"
    largest = max(SEED_SPREAD_DECIBELS, key=SEED_SPREAD_DECIBELS.__getitem__)
    return SEED_SPREAD_DECIBELS[largest], f"the largest recorded seed spread ({largest})"


@dataclass(frozen=True)
class Candidate:
    path: str  # the model file, as dvc.lock names it
    md5: str
    score: float  # SCORE
    group: str  # replicate group of its params
    code: str  # training code, `tags.training_code`
    benchmark: str
    tags: dict[str, str]  # more tags for the version (SSIM, model kind)
    floor: float = -math.inf  # the noisy input's score on the benchmark: doing nothing


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
    if not candidate.score > candidate.floor:
        return Decision(
            False,
            f"it scores {candidate.score:.4f} dB, not above the noisy input itself "
            f"({candidate.floor:.4f} dB on this benchmark): a champion must denoise",
        )
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
        difference = replicates.difference(ours, theirs)
        interval = (
            f"gain {difference.estimate:+.4f} dB, 95% interval [{difference.low:+.4f}, "
            f"{difference.high:+.4f}] ({difference.test}, {len(ours)} vs {len(theirs)} seeds)"
        )
        if not difference.low > 0:
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
    """A tag's value as a finite number; None for a missing tag, text, NaN or infinity."""
    try:
        value = float(version.tags[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _versions(client: Any, query: str) -> list[Any]:
    return client.search_model_versions(f"name = '{MODEL_NAME}' and {query}")


def _on_benchmark(benchmark: str) -> str:
    return f"tag.`{TAG_BENCHMARK}` = '{benchmark}'"


def _registered(client: Any, candidate: Candidate) -> Any | None:
    """The version that already holds this exact model file on this benchmark, if any."""
    same_file = f"tag.`{TAG_OUT}{candidate.path}` = '{candidate.md5}'"
    found = _versions(client, f"{same_file} and {_on_benchmark(candidate.benchmark)}")
    return min(found, key=lambda version: int(version.version)) if found else None


def _pending_ticket() -> str:
    return f"{PENDING} {processes.process_identity(psutil.Process())} {time.time():.0f}"


def _abandoned(ticket: str) -> bool:
    """Whether a pending version's register is gone: its process ended (on this machine), or it
    has been pending longer than any register takes."""
    _, identity, since = [*ticket.split(" "), "", ""][:3]
    try:
        too_old = time.time() - float(since) > PENDING_TIMEOUT_S
    except ValueError:
        too_old = True
    return too_old or processes.process_gone(identity)


def _set_decision(client: Any, version: Any, decision: str) -> None:
    client.set_model_version_tag(
        MODEL_NAME, version.version, TAG_DECISION, decision[:MAX_TAG_LENGTH]
    )


def wait_for_earlier_decisions(
    client: Any, benchmark: str, number: int, report: Report = silent
) -> None:
    """Return once every version of `benchmark` numbered below `number` has been decided (or
    its register has died, which is then written on it)."""
    announced: set[str] = set()
    while True:
        waiting = []
        for other in _versions(client, _on_benchmark(benchmark)):
            ticket = other.tags.get(TAG_DECISION, "")
            if int(other.version) >= number or not ticket.startswith(PENDING):
                continue
            if _abandoned(ticket):
                _set_decision(client, other, "abandoned: its register ended before deciding")
                continue
            waiting.append(str(other.version))
        if not waiting:
            return
        if new := [v for v in waiting if v not in announced]:
            report(f"waiting for the decision on version {', '.join(new)} (registered just before)")
            announced.update(new)
        time.sleep(POLL_S)


def register(runs: RunFinder, candidate: Candidate, alias: str, report: Report = silent) -> str:
    """Register the candidate (once per model file and benchmark) and move `alias` to it if
    `decide` says so, after every earlier version of the benchmark was decided; return what
    happened, in one line."""
    import mlflow

    producing = runs.producing(candidate.path, candidate.md5)
    if not producing:
        raise TrackingError(
            f"no MLflow run records {candidate.path} with md5 {candidate.md5}: nothing to "
            "register (DVC restored it from its run cache, trained while logging to another "
            "tracking store); train it against this store: `dvc exp run --force` (or "
            "`dvc repro --force`)"
        )
    client = runs.client
    with store_lock(), store_errors(runs.uri):
        version = _registered(client, candidate)
        if version is None:
            version = mlflow.register_model(
                _logged_model_uri(runs, producing[0]["run_id"]),
                MODEL_NAME,
                tags={**_version_tags(candidate, producing[0]), TAG_DECISION: _pending_ticket()},
            )
        else:
            _set_decision(client, version, _pending_ticket())
        try:
            wait_for_earlier_decisions(client, candidate.benchmark, int(version.version), report)
            outcome, decided = _decide_on(runs, candidate, alias, version)
        except BaseException:
            _set_decision(client, version, "undecided: its register stage failed")
            raise
        _set_decision(client, version, decided)
    return outcome


def _decide_on(runs: RunFinder, candidate: Candidate, alias: str, version: Any) -> tuple[str, str]:
    """Decide on `version` against the alias as it stands; move the alias if it wins. Returns
    (the outcome in one line, the decision to tag the version with)."""
    import mlflow

    client = runs.client
    try:
        champion = client.get_model_version_by_alias(MODEL_NAME, alias)
    except mlflow.exceptions.MlflowException:
        champion = None
    if champion is not None and str(champion.version) == str(version.version):
        return f"{MODEL_NAME} version {version.version} is already @{alias}", "champion"
    best = _tag_float(champion, SCORE) if champion else None
    if champion is not None and (
        best is None or champion.tags.get(TAG_BENCHMARK, candidate.benchmark) != candidate.benchmark
    ):
        return (
            f"{MODEL_NAME} version {version.version} registered; the champion, version "
            f"{champion.version}, has no {SCORE} on this benchmark ({candidate.benchmark}), so "
            f"no gain can be measured; @{alias} unchanged (tag it, or move it by hand)",
            "kept: the champion has no comparable score",
        )
    tags = champion.tags if champion else {}
    champion_config = (tags.get(TAG_REPLICATE_GROUP), tags.get(TAG_TRAINING_CODE))
    scores = benchmark_scores(runs, candidate.benchmark)
    group, code = champion_config
    evidence = (
        scores.get((candidate.group, candidate.code), {}),
        scores.get((group, code), {}) if group is not None and code is not None else {},
    )
    decision = decide(candidate, best, champion_config, evidence, measured_spread(scores))
    score = f"{SCORE} {candidate.score:.4f}"
    if decision.promote:
        client.set_registered_model_alias(MODEL_NAME, alias, version.version)
        was = f", was {best:.4f}" if best is not None else ""
        outcome = f"is now @{alias}: {decision.reason}"
        return (
            f"{MODEL_NAME} version {version.version} ({score}{was}) {outcome}",
            f"promoted: {decision.reason}",
        )
    held = f"version {champion.version}, {best:.4f}" if champion else "no champion"
    return (
        f"{MODEL_NAME} version {version.version} ({score}) registered without @{alias} "
        f"({held}): {decision.reason}",
        f"kept: {decision.reason}",
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
