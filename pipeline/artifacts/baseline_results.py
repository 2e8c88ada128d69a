"""What stage `baselines` hands to `evaluate`: the classical denoisers' scores, the noisy input's,
the robustness curve of the best baseline, the pixel probes, and the first outputs of each
baseline for the figures (`data/baselines/`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import DataError
from pipeline.core.files import write_json_atomic
from pipeline.data.arrays import load_array, save_arrays
from pipeline.data.images import IMAGES_SPEC

RESULTS_FILE = paths.BASELINES_DIR / "results.json"
EXAMPLES_DIR = paths.BASELINES_DIR / "examples"
MAX_EXAMPLES = 20  # the schema's bound on evaluate.n_examples: changing it reruns only evaluate
NOISY_INPUT = "noisy_input"  # the table's row for the noisy images themselves (no outputs)
RESULT_KEYS = ("table", "best", "robustness", "noisy_input", "probe_accuracy")


@dataclass(frozen=True)
class BaselineResults:
    table: list[dict]  # one row per baseline and for the noisy input, best first
    best: str  # the baseline with the best test PSNR
    robustness: list[dict]  # noise_factor, baseline_psnr (the best, re-tuned), noisy_psnr
    noisy_input: dict[str, float]  # bce, mse, psnr, ssim of the noisy test images
    probe_accuracy: dict[str, float]  # pca_<dim>, raw_pixels
    examples: dict[str, np.ndarray]  # the first MAX_EXAMPLES outputs of each baseline (float32)


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
        methods = [row["method"] for row in fields["table"] if row["method"] != NOISY_INPUT]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{RESULTS_FILE}: malformed ({exc!r}); rerun `dvc repro`") from None
    examples = {name: load_array(EXAMPLES_DIR / f"{name}.npy", IMAGES_SPEC) for name in methods}
    return BaselineResults(**fields, examples=examples)
