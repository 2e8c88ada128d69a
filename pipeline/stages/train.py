"""Stages `train_basic` (clean -> clean) and `train_denoise` (noisy -> clean)."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pipeline
from pipeline import distributed, paths, tracking
from pipeline.checkpoints import CheckpointDir, HistoryRow, code_digest, fingerprint
from pipeline.config import Params, TrainParams
from pipeline.datasets import load_noisy, load_prepared
from pipeline.errors import DataError, PipelineError
from pipeline.fsutil import write_csv_atomic

HISTORY_COLUMNS = ("epoch", "loss", "val_loss")
PACKAGE_DIR = Path(pipeline.__file__).parent


@dataclass(frozen=True)
class TrainingStage:
    name: str  # the DVC stage, and the params section it reads
    model_name: str
    noisy_inputs: bool


BASIC = TrainingStage("train_basic", "basic", noisy_inputs=False)
DENOISE = TrainingStage("train_denoise", "denoise", noisy_inputs=True)
STAGES = {stage.model_name: stage for stage in (BASIC, DENOISE)}


def _training_data(stage: TrainingStage) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, validation inputs, validation targets); targets are always clean."""
    split = load_prepared(paths.PREPARED_DIR)
    if not stage.noisy_inputs:
        return split.x_train, split.x_train, split.x_test, split.x_test
    noisy = load_noisy(paths.NOISY_DIR)
    if noisy.x_train.shape != split.x_train.shape or noisy.x_test.shape != split.x_test.shape:
        raise DataError(
            f"{paths.NOISY_DIR}: shapes {noisy.x_train.shape}/{noisy.x_test.shape} do not match "
            f"{paths.PREPARED_DIR} {split.x_train.shape}/{split.x_test.shape}; rerun `dvc repro`"
        )
    return noisy.x_train, split.x_train, noisy.x_test, split.x_test


def _continues_basic(stage: TrainingStage, params: Params) -> bool:
    return stage is DENOISE and params.train_denoise.init_from == "basic"


def _inputs(stage: TrainingStage, params: Params) -> list[Path]:
    inputs = [paths.PREPARED_DIR]
    if stage.noisy_inputs:
        inputs.append(paths.NOISY_DIR)
    if _continues_basic(stage, params):
        inputs.append(paths.model_file(BASIC.model_name))
    return inputs


def _initial_model(stage: TrainingStage, params: Params, settings: TrainParams):
    from pipeline import model_io, models

    if _continues_basic(stage, params):
        # The tutorial keeps training the same model, optimiser state included.
        model = model_io.load_model(paths.model_file(BASIC.model_name), compile=True)
        model.optimizer.learning_rate.assign(settings.learning_rate)
        return model
    return models.compile_for_training(
        models.build_autoencoder(params.model.encoding_dim, params.model.kind, params.seed),
        settings.learning_rate,
    )


def run(params: Params, stage: TrainingStage) -> None:
    multi_worker = params.distribute.strategy == "multi_worker"
    if multi_worker and distributed.worker_index() is None:
        status = distributed.launch(sys.argv[1:], params.distribute.workers)
        if status:
            raise PipelineError(f"{stage.name}: a training worker exited with status {status}")
        return
    strategy = distributed.strategy() if multi_worker else None
    data = _training_data(stage)
    if not distributed.is_chief():  # takes part in every gradient sum; writes and logs nothing
        _train(params, stage, data, strategy, run=None)
        return

    with tracking.stage_run(stage.name, _inputs(stage, params)) as run:
        run.log_params(params.flat())
        model, rows, checkpoint = _train(params, stage, data, strategy, run)
        from pipeline import figures, model_io, models

        model_path = paths.model_file(stage.model_name)
        history_path = paths.history_file(stage.name)
        model_io.save_model(model, model_path)
        write_csv_atomic(
            history_path, [dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in rows]
        )
        run.log_outputs([model_path, history_path])
        run.log_figure(figures.loss_curves({stage.name: rows}), "figures/loss.png")
        examples = data[2][:5]
        run.log_keras_model(model, examples, models.predict(model, examples))
    if checkpoint:
        checkpoint.clear()


def _train(
    params: Params,
    stage: TrainingStage,
    data: tuple[np.ndarray, ...],
    strategy: Any | None,
    run: tracking.StageRun | None,
) -> tuple[Any, list[HistoryRow], CheckpointDir | None]:
    """Train (resuming a checkpoint when one process trains); return model, history, checkpoint."""
    from pipeline import models, training  # TensorFlow loads here

    settings: TrainParams = getattr(params, stage.name)
    training.enable_determinism(params.seed)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = _initial_model(stage, params, settings)
    rows: list[HistoryRow] = []
    checkpoint = None
    if run is not None and strategy is None:
        checkpoint = CheckpointDir(
            paths.STATE_DIR / "checkpoints" / stage.name,
            fingerprint(stage.name, params.flat(), run.input_md5s, code_digest(PACKAGE_DIR)),
        )
        if resumed := checkpoint.load():
            training.restore_training_state(model, resumed.state)
            rows = resumed.rows
            run.take_over(resumed.run_id, len(rows))
            for epoch, loss, val_loss in rows:
                run.log_metrics({"loss": loss, "val_loss": val_loss}, step=epoch)
            print(f"{stage.name}: resuming after epoch {len(rows)} from {checkpoint.directory}")

    def end_of_epoch(result: training.EpochResult) -> None:
        rows.append((result.epoch, result.loss, result.val_loss))
        if checkpoint:
            checkpoint.save(rows, training.training_state(model), run.run_id)
        if run is None:
            return
        print(
            f"{stage.name}: epoch {result.epoch}/{settings.epochs} loss {result.loss:.4f} "
            f"val_loss {result.val_loss:.4f} ({result.seconds:.2f} s)",
            flush=True,
        )
        run.log_metrics(
            {"loss": result.loss, "val_loss": result.val_loss, "epoch_seconds": result.seconds},
            step=result.epoch,
        )

    training.fit(
        model,
        *data,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        seed=params.seed,
        first_epoch=len(rows) + 1,
        on_epoch_end=end_of_epoch,
        jit_compile=models.uses_xla(params.model.kind),
        runner=distributed.MultiWorkerRunner(strategy, model, settings.batch_size)
        if strategy
        else None,
    )
    return model, rows, checkpoint
