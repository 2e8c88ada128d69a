"""Stage `evaluate`: which denoiser to trust, and can the code replace the pixels.

On the test set: reconstruction metrics of both models; the autoencoder ranked among the classical
denoisers that stage `baselines` scored; PSNR against noise strength; a linear probe on the codes
next to the baselines' probes; figures, including prior samples and an interpolation for a VAE.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline import evaluation, paths, tracking
from pipeline.config import Params, flatten
from pipeline.datasets import NoisySplit, Split, load_noisy, load_prepared
from pipeline.errors import DataError
from pipeline.fsutil import write_csv_atomic, write_json_atomic
from pipeline.stages import baselines as baselines_stage
from pipeline.stages.train import BASIC, DENOISE, HISTORY_COLUMNS

MAP_POINTS = 2000  # test codes in the 2-D map (t-SNE cost grows fast with the count)
PRIOR_SAMPLES = 64
INTERPOLATION_STEPS = 10
DENOISERS_TABLE = paths.REPORTS_DIR / "denoisers.csv"
ROBUSTNESS_TABLE = paths.REPORTS_DIR / "robustness.csv"
AUTOENCODER = "autoencoder"


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


def output_files() -> list[Path]:
    return [paths.METRICS_FILE, DENOISERS_TABLE, ROBUSTNESS_TABLE, paths.FIGURES_DIR]


def run(params: Params) -> None:
    split = load_prepared(paths.PREPARED_DIR)
    noisy = load_noisy(paths.NOISY_DIR)
    reference = baselines_stage.load()
    histories = {
        stage.name: read_history(paths.history_file(stage.name)) for stage in (BASIC, DENOISE)
    }
    model_files = [paths.model_file(stage.model_name) for stage in (BASIC, DENOISE)]
    inputs = [
        paths.PREPARED_DIR,
        paths.NOISY_DIR,
        paths.BASELINES_DIR,
        *model_files,
        *(paths.history_file(stage) for stage in histories),
    ]

    with tracking.stage_run("evaluate", inputs) as run:
        run.log_params(params.flat())
        from pipeline import figures, model_io  # TensorFlow loads here

        basic, denoiser = (model_io.load_model(path, compile=False) for path in model_files)
        metrics, table, curve, drawn = _evaluate(params, split, noisy, reference, basic, denoiser)
        drawn["loss_curves"] = figures.loss_curves(histories)

        write_json_atomic(paths.METRICS_FILE, metrics)
        write_csv_atomic(DENOISERS_TABLE, table)
        write_csv_atomic(ROBUSTNESS_TABLE, curve)
        for name, figure in drawn.items():
            figures.save_png(figure, paths.FIGURES_DIR / f"{name}.png")
        run.log_metrics(_numbers(metrics))
        run.log_outputs(output_files())
    for line in evaluation.score_lines(table, metrics["probe_accuracy"]):
        print(f"evaluate: {line}")


def _evaluate(
    params: Params,
    split: Split,
    noisy: NoisySplit,
    reference: baselines_stage.BaselineResults,
    basic,
    denoiser,
):
    from pipeline import figures, models

    kind, dim, n = models.kind_of(basic), params.model.encoding_dim, params.evaluate.n_examples
    x_test = split.x_test
    reconstructed = models.predict(basic, x_test)
    denoised = models.predict(denoiser, noisy.x_test)
    metrics = evaluation.reconstruction_groups(x_test, reconstructed, denoised)
    metrics["noisy_input"] = reference.noisy_input

    ours = metrics["denoiser_on_noisy"]
    table = evaluation.best_first(
        [evaluation.table_row(AUTOENCODER, ours["psnr"], ours["ssim"]), *reference.table]
    )
    metrics["denoisers"] = {
        row["method"]: {"psnr": row["psnr"], "ssim": row["ssim"]} for row in table
    }
    metrics["best_baseline"] = reference.best
    metrics["model_kind"] = kind

    size = params.evaluate.robustness_size
    denoiser_psnr = evaluation.denoiser_robustness(
        lambda images: models.predict(denoiser, images),
        x_test[:size],
        params.evaluate.robustness_factors,
        params.noise.seed,
    )
    curve = [
        {"noise_factor": row["noise_factor"], "denoiser_psnr": psnr, **row}
        for psnr, row in zip(denoiser_psnr, reference.robustness, strict=True)
    ]

    def codes(model):
        encoder = models.encoder_of(model)
        return models.predict(encoder, split.x_train), models.predict(encoder, x_test)

    basic_codes = codes(basic)
    code_accuracy = evaluation.probe_accuracies(
        {"basic_codes": basic_codes, "denoiser_codes": codes(denoiser)},
        split.y_train,
        split.y_test,
    )
    metrics["probe_accuracy"] = {**code_accuracy, **reference.probe_accuracy}

    outputs = {AUTOENCODER: denoised, **reference.examples}
    shown = [row["method"] for row in table if row["method"] != evaluation.NOISY_INPUT]
    drawn = {
        "codes": figures.code_grid(basic_codes[1][:n]),
        "reconstructions": figures.image_rows(
            {"original": x_test[:n], "reconstructed": reconstructed[:n]}
        ),
        "noisy_samples": figures.image_rows({"noisy": noisy.x_test[:n]}),
        "denoised": figures.image_rows({"noisy": noisy.x_test[:n], "denoised": denoised[:n]}),
        "denoiser_comparison": figures.image_rows(
            {
                "noisy": noisy.x_test[:n],
                **{method: outputs[method][:n] for method in shown},
                "original": x_test[:n],
            }
        ),
        "denoiser_scores": figures.denoiser_scores(table),
        "robustness": figures.robustness(curve, reference.best),
        "code_map": figures.code_map(
            evaluation.embed_2d(basic_codes[1][:MAP_POINTS], params.seed),
            split.y_test[:MAP_POINTS],
            f"t-SNE of the {kind} model's test codes",
        ),
    }
    if kind == "vae":
        decoder = models.decoder_of(basic)
        prior = np.random.default_rng(params.seed).standard_normal((PRIOR_SAMPLES, dim))
        drawn["vae_prior_samples"] = figures.image_grid(
            models.predict(decoder, prior.astype(np.float32)), 8, "decoded from N(0, I)"
        )
        start, end = basic_codes[1][0], basic_codes[1][1]
        steps = np.linspace(0, 1, INTERPOLATION_STEPS)[:, None]
        path = ((1 - steps) * start + steps * end).astype(np.float32)
        drawn["vae_interpolation"] = figures.image_rows(
            {"interpolation": models.predict(decoder, path)}
        )
    return metrics, table, curve, drawn


def _numbers(tree: dict) -> dict[str, float]:
    """The numeric leaves of `tree`, with dotted keys, for MLflow."""
    return {
        key: float(value) for key, value in flatten(tree).items() if isinstance(value, int | float)
    }
