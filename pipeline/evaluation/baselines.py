"""The core of stage `baselines`: classical denoisers tuned on held-out images and scored on the
test set, the best one's robustness curve, the noisy input's scores, and the probe on PCA
features and raw pixels. No trained model enters, so training experiments do not rerun it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.artifacts.baseline_results import MAX_EXAMPLES, BaselineResults
from pipeline.core.config import Params
from pipeline.core.progress import Report, scores, silent
from pipeline.data.images import NoisySplit, Split
from pipeline.data.noise import at_each_factor
from pipeline.evaluation.classical import FILTERS, Baseline, pca_baseline, tune
from pipeline.evaluation.metrics import mean_psnr, mean_ssim, reconstruction_metrics
from pipeline.evaluation.probe import pca_features, probes_started
from pipeline.evaluation.table import best_first, noisy_input_row, table_row


def all_baselines(clean_train: np.ndarray, components: int) -> list[Baseline]:
    return [*FILTERS, pca_baseline(clean_train, components)]


def compare_baselines(
    baselines: Sequence[Baseline],
    clean: np.ndarray,
    noisy: np.ndarray,
    tuning_clean: np.ndarray,
    tuning_noisy: np.ndarray,
    report: Report = silent,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One row per baseline (PSNR, SSIM on the test set; parameter tuned on held-out images),
    and each baseline's outputs."""
    rows, outputs = [], {}
    for baseline in baselines:
        value = tune(baseline, tuning_noisy, tuning_clean)
        output = outputs[baseline.name] = baseline(noisy, value)
        psnr, ssim = mean_psnr(clean, output), mean_ssim(clean, output)
        rows.append(table_row(baseline.name, psnr, ssim, baseline.parameter, value))
        report(f"{baseline.name}: PSNR {psnr:.2f} dB ({baseline.parameter} {value:g}, tuned)")
    return rows, outputs


def baseline_robustness(
    baseline: Baseline,
    clean: np.ndarray,
    tuning_clean: np.ndarray,
    factors: Sequence[float],
    seed: int,
) -> list[dict]:
    """PSNR against noise factor of a baseline (re-tuned at each factor on the held-out images)
    and of the noisy input."""
    rows = []
    for (factor, noisy), (_, tuning_noisy) in zip(
        at_each_factor(clean, "x_test", factors, seed),
        at_each_factor(tuning_clean, "x_tuning", factors, seed),
        strict=True,
    ):
        value = tune(baseline, tuning_noisy, tuning_clean)
        rows.append(
            {
                "noise_factor": factor,
                "baseline_psnr": mean_psnr(clean, baseline(noisy, value)),
                "noisy_psnr": mean_psnr(clean, noisy),
            }
        )
    return rows


def score_baselines(
    params: Params, split: Split, noisy: NoisySplit, report: Report = silent
) -> BaselineResults:
    """Classical denoisers tuned on the held-out images and scored on the test set, the best one's
    robustness curve, the noisy input's scores, and the probe on PCA features and raw pixels."""
    dim = params.model.encoding_dim
    features = {
        f"pca_{dim}": pca_features(split.x_train, split.x_test, dim),
        "raw_pixels": (split.x_train, split.x_test),
    }
    with probes_started(features, split.y_train, split.y_test) as probe_scores:
        table, best, robustness, noisy_input, examples = _score_filters(
            params, split, noisy, report
        )
        probe = probe_scores()  # the raw-pixel probe takes 9 s: it ran beside the filters
    report(f"linear probe on PCA features and raw pixels: {scores(probe)}")
    return BaselineResults(table, best, robustness, noisy_input, probe, examples)


def _score_filters(params: Params, split: Split, noisy: NoisySplit, report: Report) -> tuple:
    """The table (best first), the best filter, its robustness curve, the noisy input's scores,
    and each filter's first outputs."""
    dim = params.model.encoding_dim
    baselines = {b.name: b for b in all_baselines(split.x_train, dim)}
    rows, outputs = compare_baselines(
        list(baselines.values()),
        split.x_test,
        noisy.x_test,
        split.x_tuning,
        noisy.x_tuning,
        report,
    )
    best = max(rows, key=lambda row: row["psnr"])["method"]
    noisy_input = reconstruction_metrics(split.x_test, noisy.x_test)
    rows.append(noisy_input_row(noisy_input))
    robustness = baseline_robustness(
        baselines[best],
        split.x_test[: params.evaluate.robustness_size],
        split.x_tuning,
        params.evaluate.robustness_factors,
        params.noise.seed,
    )
    report(f"{best} against noise: {len(robustness)} noise factors, each re-tuned")
    examples = {name: output[:MAX_EXAMPLES].astype(np.float32) for name, output in outputs.items()}
    return best_first(rows), best, robustness, noisy_input, examples
