"""Stages `train_basic` (clean -> clean) and `train_denoise` (noisy -> clean).

python -m pipeline.stages.train basic|denoise
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import pipeline
from pipeline.artifacts.history import HistoryRow, write_history
from pipeline.core import entry, params_guard, paths
from pipeline.core.config import Params, TrainParams
from pipeline.core.entry import stage_main
from pipeline.core.errors import DataError, TrainingDiverged
from pipeline.data.images import load_noisy, load_prepared
from pipeline.modelling import workers
from pipeline.modelling.checkpoints import CheckpointDir, code_digest, fingerprint
from pipeline.tracking.recorder import StageRun, stage_run

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
    from pipeline.modelling import architectures, model_files

    if _continues_basic(stage, params):
        # The tutorial keeps training the same model, optimiser state included.
        model = model_files.load_model(paths.model_file(BASIC.model_name), compile=True)
        model.optimizer.learning_rate.assign(settings.learning_rate)
        return model
    return architectures.compile_for_training(
        architectures.build_autoencoder(params.model.encoding_dim, params.model.kind, params.seed),
        settings.learning_rate,
    )


def launch_workers(params: Params, stage: TrainingStage) -> None:
    """Run this stage as `distribute.workers` cooperating processes, each given exactly the
    params this process validated (a copy, so an edit of params.yaml meanwhile changes nothing)."""
    command = [sys.executable, "-m", "pipeline.stages.train", stage.model_name]
    text = yaml.safe_dump(params.model_dump(), sort_keys=False)
    workers.launch(command, params.distribute.workers, text)
    params_guard.unchanged()


def run(params: Params, model: str) -> None:
    stage = STAGES[model]
    multi_worker = params.distribute.strategy == "multi_worker"
    if multi_worker and workers.worker_index() is None:
        launch_workers(params, stage)
        return
    data = _training_data(stage)
    if multi_worker:
        from pipeline.modelling import distributed  # TensorFlow loads here, before any op runs

        strategy = distributed.strategy()
    else:
        strategy = None
    if not workers.is_chief():  # takes part in every gradient sum; writes and logs nothing
        _train(params, stage, data, strategy, run=None)
        return

    with stage_run(stage.name, _inputs(stage, params), params) as run:
        run.log_params(params.flat())
        model, rows, checkpoint = _train(params, stage, data, strategy, run)
        from pipeline.modelling import architectures, model_files

        model_path = paths.model_file(stage.model_name)
        history_path = paths.history_file(stage.name)
        entry.the_pipeline_goes_on()
        model_files.save_model(model, model_path)
        write_history(history_path, rows)
        run.log_outputs([model_path, history_path])
        examples = data[2][:5]
        run.log_model_file(model_path, examples, architectures.predict(model, examples))
    if checkpoint:
        checkpoint.clear()


def _train(
    params: Params,
    stage: TrainingStage,
    data: tuple[np.ndarray, ...],
    strategy: Any | None,
    run: StageRun | None,
) -> tuple[Any, list[HistoryRow], CheckpointDir | None]:
    """Train (resuming a checkpoint when one process trains); return model, history, checkpoint."""
    from pipeline.modelling import architectures, training  # TensorFlow loads here

    settings: TrainParams = getattr(params, stage.name)
    training.enable_determinism(params.seed)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = _initial_model(stage, params, settings)
    if run is not None:
        run.confirm()  # the MLflow run opened while TensorFlow loaded, in the recorder process
    checkpoint = _checkpoint(params, stage, run) if strategy is None else None
    rows = _resume(checkpoint, model, stage, run)
    try:
        training.fit(
            model,
            *data,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            seed=params.seed,
            first_epoch=len(rows) + 1,
            on_epoch_end=_epoch_reporter(stage, settings, model, rows, checkpoint, run),
            jit_compile=architectures.uses_xla(params.model.kind),
            runner=_runner(strategy, model, settings),
        )
    except TrainingDiverged:
        if checkpoint:  # the same params would diverge again from it
            checkpoint.clear()
        raise
    return model, rows, checkpoint


def _checkpoint(params: Params, stage: TrainingStage, run: StageRun | None) -> CheckpointDir | None:
    """Where this stage checkpoints each epoch: the process that logs (the chief), training
    alone; keyed by everything the result depends on."""
    if run is None:
        return None
    key = fingerprint(stage.name, params.flat(), run.input_md5s, code_digest(PACKAGE_DIR))
    return CheckpointDir(paths.CHECKPOINTS_DIR / stage.name, key)


def _resume(
    checkpoint: CheckpointDir | None, model: Any, stage: TrainingStage, run: StageRun | None
) -> list[HistoryRow]:
    """The history of the epochs an interrupted run of this stage finished, its state put back
    into `model` and its run taken over; [] when there is none."""
    from pipeline.modelling import training

    resumed = checkpoint.load() if checkpoint else None
    if checkpoint is None or resumed is None or run is None:
        return []
    training.restore_training_state(model, resumed.state)
    run.take_over(resumed.run_id, len(resumed.rows))
    for epoch, loss, val_loss in resumed.rows:
        run.log_metrics({"loss": loss, "val_loss": val_loss}, step=epoch)
    print(f"{stage.name}: resuming after epoch {len(resumed.rows)} from {checkpoint.directory}")
    return list(resumed.rows)


def _epoch_reporter(
    stage: TrainingStage,
    settings: TrainParams,
    model: Any,
    rows: list[HistoryRow],
    checkpoint: CheckpointDir | None,
    run: StageRun | None,
):
    """What happens after each epoch: its row kept, a checkpoint saved, a progress line and its
    losses logged (by the process that logs)."""
    from pipeline.modelling import training

    def end_of_epoch(result: training.EpochResult) -> None:
        rows.append((result.epoch, result.loss, result.val_loss))
        if run is None:
            return
        if checkpoint:
            checkpoint.save(rows, training.training_state(model), run.run_id)
        print(
            f"{stage.name}: epoch {result.epoch}/{settings.epochs} loss {result.loss:.4f} "
            f"val_loss {result.val_loss:.4f} ({result.seconds:.2f} s)",
            flush=True,
        )
        run.log_metrics(
            {"loss": result.loss, "val_loss": result.val_loss, "epoch_seconds": result.seconds},
            step=result.epoch,
        )

    return end_of_epoch


def _runner(strategy: Any | None, model: Any, settings: TrainParams) -> Any | None:
    """How an epoch is run: split across the workers under multi-worker training, else the
    training loop's own (None)."""
    if strategy is None:
        return None
    from pipeline.modelling.distributed import MultiWorkerRunner

    return MultiWorkerRunner(strategy, model, settings.batch_size)


if __name__ == "__main__":
    raise SystemExit(stage_main("train", run, choices={"model": tuple(STAGES)}))
