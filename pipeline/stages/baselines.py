"""Stage `baselines`: the half of the evaluation that no trained model enters.

Classical denoisers tuned on held-out training images and scored on the noisy test set, the best
one's PSNR against noise strength, the noisy input's own scores, and the linear probe on PCA
features and raw pixels. DVC reruns this only when the data, the noise or the code size change,
not after each training experiment; `evaluate` adds the autoencoders to these results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from pipeline import evaluation, paths
from pipeline.arrays import ArraySpec, load_array, save_arrays
from pipeline.config import Params
from pipeline.datasets import IMAGE_PIXELS, NoisySplit, Split, load_noisy, load_prepared
from pipeline.errors import DataError
from pipeline.fsutil import write_json_atomic
from pipeline.metrics import reconstruction_metrics
from pipeline.probe import pca_features

RESULTS_FILE = paths.BASELINES_DIR / "results.json"
EXAMPLES_DIR = paths.BASELINES_DIR / "examples"
MAX_EXAMPLES = 20  # the schema's bound on evaluate.n_examples: changing it reruns only evaluate
RESULT_KEYS = ("table", "best", "robustness", "noisy_input", "probe_accuracy")


@dataclass(frozen=True)
class BaselineResults:
    table: list[dict]  # evaluation.table_row per baseline and for the noisy input, best first
    best: str  # the baseline with the best test PSNR
    robustness: list[dict]  # noise_factor, baseline_psnr (the best, re-tuned), noisy_psnr
    noisy_input: dict[str, float]  # bce, mse, psnr, ssim of the noisy test images
    probe_accuracy: dict[str, float]  # pca_<dim>, raw_pixels
    examples: dict[str, np.ndarray]  # the first MAX_EXAMPLES outputs of each baseline (float32)


def compute(params: Params, split: Split, noisy: NoisySplit) -> BaselineResults:
    dim = params.model.encoding_dim
    baselines = {b.name: b for b in evaluation.all_baselines(split.x_train, dim)}
    rows, outputs = evaluation.compare_baselines(
        list(baselines.values()), split.x_test, noisy.x_test, split.x_tuning, noisy.x_tuning
    )
    best = max(rows, key=lambda row: row["psnr"])["method"]
    noisy_input = reconstruction_metrics(split.x_test, noisy.x_test)
    rows.append(
        evaluation.table_row(evaluation.NOISY_INPUT, noisy_input["psnr"], noisy_input["ssim"])
    )
    robustness = evaluation.baseline_robustness(
        baselines[best],
        split.x_test[: params.evaluate.robustness_size],
        split.x_tuning,
        params.evaluate.robustness_factors,
        params.noise.seed,
    )
    probe = evaluation.probe_accuracies(
        {
            f"pca_{dim}": pca_features(split.x_train, split.x_test, dim),
            "raw_pixels": (split.x_train, split.x_test),
        },
        split.y_train,
        split.y_test,
    )
    examples = {name: output[:MAX_EXAMPLES].astype(np.float32) for name, output in outputs.items()}
    return BaselineResults(
        evaluation.best_first(rows), best, robustness, noisy_input, probe, examples
    )


def save(results: BaselineResults) -> None:
    save_arrays(EXAMPLES_DIR, results.examples)
    write_json_atomic(RESULTS_FILE, {key: getattr(results, key) for key in RESULT_KEYS})


def load() -> BaselineResults:
    """What `save` wrote; a missing or malformed file raises a DataError naming it."""
    if not RESULTS_FILE.is_file():
        raise DataError(f"{RESULTS_FILE}: missing (run the baselines stage: `dvc repro`)")
    try:
        stored = json.loads(RESULTS_FILE.read_text())
        fields = {key: stored[key] for key in RESULT_KEYS}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{RESULTS_FILE}: malformed ({exc!r}); rerun `dvc repro`") from None
    spec = ArraySpec("float32", (None, IMAGE_PIXELS), (0.0, 1.0))
    examples = {
        row["method"]: load_array(EXAMPLES_DIR / f"{row['method']}.npy", spec)
        for row in fields["table"]
        if row["method"] != evaluation.NOISY_INPUT
    }
    return BaselineResults(**fields, examples=examples)


def run(params: Params) -> None:
    split = load_prepared(paths.PREPARED_DIR)
    noisy = load_noisy(paths.NOISY_DIR)
    results = compute(params, split, noisy)
    save(results)
    for line in evaluation.score_lines(results.table, results.probe_accuracy):
        print(f"baselines: {line}")
    print(f"baselines: -> {paths.BASELINES_DIR}/")
