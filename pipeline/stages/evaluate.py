"""Stage `evaluate`: test-set metrics of both models and of the do-nothing baseline, and figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline import paths, tracking
from pipeline.config import Params
from pipeline.datasets import load_noisy, load_prepared
from pipeline.errors import DataError
from pipeline.fsutil import write_json_atomic
from pipeline.metrics import reconstruction_metrics
from pipeline.stages.train import BASIC, DENOISE, HISTORY_COLUMNS


def read_history(path: Path) -> list[tuple[int, float, float]]:
    if not path.is_file():
        raise DataError(f"{path}: missing (run the training stage: `dvc repro`)")
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != HISTORY_COLUMNS:
            raise DataError(f"{path}: header {header}, expected {HISTORY_COLUMNS}")
        try:
            return [(int(epoch), float(loss), float(val)) for epoch, loss, val in reader]
        except ValueError as exc:
            raise DataError(f"{path}: malformed row ({exc})") from None


def evaluation_metrics(
    clean: np.ndarray, noisy: np.ndarray, reconstructed: np.ndarray, denoised: np.ndarray
) -> dict[str, dict[str, float]]:
    """Every score compares with the clean test images."""
    return {
        "basic_on_clean": reconstruction_metrics(clean, reconstructed),
        "denoiser_on_noisy": reconstruction_metrics(clean, denoised),
        "noisy_input": reconstruction_metrics(clean, noisy),
    }


def figure_files() -> dict[str, Path]:
    names = ("codes", "reconstructions", "noisy_samples", "denoised", "loss_curves")
    return {name: paths.FIGURES_DIR / f"{name}.png" for name in names}


def run(params: Params) -> None:
    split = load_prepared(paths.PREPARED_DIR)
    _, noisy_test = load_noisy(paths.NOISY_DIR)
    histories = {
        stage.name: read_history(paths.history_file(stage.name)) for stage in (BASIC, DENOISE)
    }
    model_files = [paths.model_file(stage.model_name) for stage in (BASIC, DENOISE)]
    inputs = [
        paths.PREPARED_DIR,
        paths.NOISY_DIR,
        *model_files,
        *(paths.history_file(stage) for stage in histories),
    ]

    with tracking.stage_run("evaluate", inputs) as run:
        run.log_params(params.flat())
        from pipeline import figures, model_io, models  # TensorFlow loads here

        basic, denoiser = (model_io.load_model(path, compile=False) for path in model_files)
        x_test = split.x_test
        reconstructed = models.predict(basic, x_test)
        denoised = models.predict(denoiser, noisy_test)
        metrics = evaluation_metrics(x_test, noisy_test, reconstructed, denoised)
        write_json_atomic(paths.METRICS_FILE, metrics)

        n = params.evaluate.n_examples
        codes = models.predict(models.encoder_of(basic), x_test[:n])
        drawn = {
            "codes": figures.code_grid(codes),
            "reconstructions": figures.image_rows(
                {"original": x_test[:n], "reconstructed": reconstructed[:n]}
            ),
            "noisy_samples": figures.image_rows({"noisy": noisy_test[:n]}),
            "denoised": figures.image_rows({"noisy": noisy_test[:n], "denoised": denoised[:n]}),
            "loss_curves": figures.loss_curves(histories),
        }
        for name, path in figure_files().items():
            figures.save_png(drawn[name], path)

        run.log_metrics(
            {
                f"{group}.{name}": value
                for group, scores in metrics.items()
                for name, value in scores.items()
            }
        )
        run.log_outputs([paths.METRICS_FILE, paths.FIGURES_DIR])
        for group, scores in metrics.items():
            print(f"evaluate: {group:18s} " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
