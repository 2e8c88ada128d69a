"""Stage `evaluate`: which denoiser to trust, and can the code replace the pixels.

On the test set: reconstruction metrics of both models; the autoencoder ranked among the classical
denoisers that stage `baselines` scored; PSNR against noise strength; a linear probe on the codes
next to the baselines' probes; figures, including prior samples and an interpolation for a VAE.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import baseline_results
from pipeline.artifacts.history import read_history
from pipeline.core import paths, progress
from pipeline.core.config import Params
from pipeline.core.entry import stage_main
from pipeline.core.files import write_csv_atomic, write_json_atomic
from pipeline.data.images import load_noisy, load_prepared
from pipeline.evaluation.benchmark import benchmark_name
from pipeline.evaluation.table import score_lines
from pipeline.tracking.recorder import stage_run
from pipeline.tracking.runs import workspace_training_code
from pipeline.tracking.tags import TAG_BENCHMARK, TAG_TRAINING_CODE

SCORED_MODELS = {"basic_on_clean": "basic", "denoiser_on_noisy": "denoise"}  # metrics -> model


def _autoencoders(basic_file: Path, denoiser_file: Path):
    """The two models as functions of arrays, for the TensorFlow-free evaluation."""
    from pipeline.evaluation.autoencoders import Autoencoders
    from pipeline.modelling import architectures as nets
    from pipeline.modelling.model_files import load_model  # TensorFlow loads here

    basic, denoiser = (load_model(path, compile=False) for path in (basic_file, denoiser_file))
    basic_encoder, denoiser_encoder = nets.encoder_of(basic), nets.encoder_of(denoiser)
    return Autoencoders(
        kind=nets.kind_of(basic),
        reconstruct=lambda images: nets.predict(basic, images),
        denoise=lambda images: nets.predict(denoiser, images),
        encode_basic=lambda images: nets.predict(basic_encoder, images),
        encode_denoiser=lambda images: nets.predict(denoiser_encoder, images),
        decode_basic=lambda codes: nets.predict(nets.decoder_of(basic), codes),
    )


def output_files() -> list[Path]:
    return [paths.METRICS_FILE, paths.DENOISERS_TABLE, paths.ROBUSTNESS_TABLE, paths.FIGURES_DIR]


def run(params: Params) -> None:
    split = load_prepared(paths.PREPARED_DIR)
    noisy = load_noisy(paths.NOISY_DIR)
    reference = baseline_results.load()
    histories = {stage: read_history(paths.history_file(stage)) for stage in paths.TRAINING_STAGES}
    model_files = [paths.model_file(name) for name in paths.TRAINING_STAGES.values()]
    inputs = [
        paths.PREPARED_DIR,
        paths.NOISY_DIR,
        paths.BASELINES_DIR,
        *model_files,
        *(paths.history_file(stage) for stage in paths.TRAINING_STAGES),
    ]

    with stage_run("evaluate", inputs, params) as run:
        run.log_params(params.flat())
        tags = {TAG_BENCHMARK: benchmark_name(params)}
        if code := workspace_training_code():
            tags[TAG_TRAINING_CODE] = code
        run.set_tags(tags)
        from pipeline.evaluation import figures
        from pipeline.evaluation.autoencoders import evaluate_autoencoders

        models = _autoencoders(*model_files)
        run.confirm()  # the MLflow run opened meanwhile, in the recorder process
        result = evaluate_autoencoders(
            params, split, noisy, reference, models, histories, progress.printer("evaluate")
        )
        write_json_atomic(paths.METRICS_FILE, result.metrics)
        write_csv_atomic(paths.DENOISERS_TABLE, result.table)
        write_csv_atomic(paths.ROBUSTNESS_TABLE, result.robustness)
        for name, figure in result.figures.items():
            figures.save_png(figure, paths.FIGURES_DIR / f"{name}.png")
        scored = {group: paths.model_file(name) for group, name in SCORED_MODELS.items()}
        run.log_metric_tree(result.metrics, scored)
        run.log_outputs(output_files())
        run.log_directory(paths.FIGURES_DIR, "figures")  # where a user looks in the MLflow UI
    for line in score_lines(result.table, result.metrics["probe_accuracy"]):
        print(f"evaluate: {line}")


if __name__ == "__main__":
    raise SystemExit(stage_main("evaluate", run))
