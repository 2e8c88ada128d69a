"""Seed replicates: is a difference between two configurations real, or seed noise?

A configuration is every param but `seed`; its runs over several training seeds are replicates.
For each side: n, mean, standard deviation and the 95% t-interval of the mean. Between two sides:
the difference of means with its 95% interval, from a paired t-test when both sides ran the same
seeds (each seed gives the same initial weights and batch order, so pairing removes that
variance), Welch's t-test otherwise. The verdict is "better" or "worse" only when the interval
excludes zero; a side with one seed gives no verdict.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
LOWER_IS_BETTER = frozenset({"bce", "mse", "loss", "val_loss"})

BETTER, WORSE, NOISE, SAME = "better", "worse", "within seed noise", "identical"
ONE_SEED = "no verdict: one seed"
NOT_A_NUMBER = "no verdict: not a number"


def higher_is_better(metric: str) -> bool:
    return metric.rsplit(".", 1)[-1] not in LOWER_IS_BETTER


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); nan for one value
    low: float  # 95% interval of the mean
    high: float


def summarise(values: list[float]) -> Summary:
    sample = np.asarray(values, dtype=float)
    n = len(sample)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = float(sample.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(sample.std(ddof=1))
    if std == 0.0:
        return Summary(n, mean, 0.0, mean, mean)
    from scipy import stats  # 2 s; `register` needs it only when both sides have replicates

    low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Summary(n, mean, std, float(low), float(high))


@dataclass(frozen=True)
class Difference:
    estimate: float  # mean of the candidate minus mean of the baseline
    low: float
    high: float
    test: str  # "paired", "welch", "exact" (no variance on either side) or "-"
    verdict: str


def difference(
    candidate: dict[int, float], baseline: dict[int, float], higher_better: bool = True
) -> Difference:
    """Candidate minus baseline, each given as seed -> value."""
    estimate = float(np.mean(list(candidate.values())) - np.mean(list(baseline.values())))
    if not np.isfinite([*candidate.values(), *baseline.values()]).all():
        return Difference(math.nan, math.nan, math.nan, "-", NOT_A_NUMBER)
    if len(candidate) < 2 or len(baseline) < 2:
        return Difference(estimate, math.nan, math.nan, "-", ONE_SEED)
    a, b = list(candidate.values()), list(baseline.values())
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        # Nothing varies with the seed (a metric of the data alone): the difference is exact.
        verdict = _verdict(estimate, estimate, higher_better)
        return Difference(estimate, estimate, estimate, "exact", verdict)
    from scipy import stats

    with warnings.catch_warnings():  # equal paired differences: SciPy warns, the answer is exact
        warnings.simplefilter("ignore", RuntimeWarning)
        if candidate.keys() == baseline.keys():
            seeds = sorted(candidate)
            result = stats.ttest_rel([candidate[s] for s in seeds], [baseline[s] for s in seeds])
            test = "paired"
        else:
            result = stats.ttest_ind(a, b, equal_var=False)
            test = "welch"
        interval = result.confidence_interval(CONFIDENCE)
    low, high = float(interval.low), float(interval.high)
    if math.isnan(low):  # paired differences all equal: the difference is exact
        low = high = estimate
    return Difference(estimate, low, high, test, _verdict(low, high, higher_better))


def _verdict(low: float, high: float, higher_better: bool) -> str:
    if low == high == 0.0:
        return SAME
    if low > 0.0:
        return BETTER if higher_better else WORSE
    if high < 0.0:
        return WORSE if higher_better else BETTER
    return NOISE
