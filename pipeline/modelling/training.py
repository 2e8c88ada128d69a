"""A deterministic, compiled training loop for Keras models.

`model.fit` on this small network spends most of its time in per-step Python overhead. Here one
XLA-compiled `tf.function` runs a whole epoch (a while-loop over batches, each batch gathered
from the resident training tensor by its shuffled indices), with the batch size, the optimiser
and the loss the model was compiled with. The shuffle order of epoch `e` is a pure
function of `(seed, e)`, so a run resumed from a checkpoint repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.core.errors import TrainingDiverged
from pipeline.modelling.architectures import random_states

# Per-pixel reconstruction losses of a sane run stay far below this (predicting 0.5 everywhere
# scores 0.69). Above it, the weights have exploded even if the loss is still finite.
LOSS_CEILING = 100.0


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # counted from 1
    loss: float
    val_loss: float
    seconds: float = field(default=0.0, compare=False)  # wall time of the training pass


def enable_determinism(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def mean_loss(
    model: keras.Model, per_sample_loss: Callable, x: tf.Tensor, y: tf.Tensor, training: bool
) -> tf.Tensor:
    """The compiled loss averaged over the batch, plus any loss a layer added (a VAE's KL)."""
    loss = tf.reduce_mean(per_sample_loss(y, model(x, training=training)))
    extra = model.losses
    return loss + tf.add_n(extra) if extra else loss


def gradient_step(model: keras.Model, loss_of: Callable[[], tf.Tensor]) -> tf.Tensor:
    """One optimiser step on the loss `loss_of()` computes; returns that loss."""
    with tf.GradientTape() as tape:
        loss = loss_of()
    variables = model.trainable_variables
    model.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    return loss


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


class EpochRunner:
    """Compiled epoch and validation functions for one compiled model and one batch size."""

    def __init__(self, model: keras.Model, batch_size: int, jit_compile: bool = True):
        if model.optimizer is None:
            raise ValueError("compile the model (optimizer and loss) before training it")
        self.model = model
        self.batch_size = batch_size
        self.per_sample_loss = keras.losses.get(model.loss)
        self._step = tf.function(self._train_step, jit_compile=jit_compile)
        # All full batches of an epoch in one compiled loop: no per-step Python or dispatch.
        self._batches = tf.function(self._train_batches, jit_compile=jit_compile)
        self._val = tf.function(self._batch_loss_sum, jit_compile=jit_compile)

    def _loss(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tf.Tensor:
        return mean_loss(self.model, self.per_sample_loss, x, y, training)

    def _train_step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return gradient_step(self.model, lambda: self._loss(x, y, training=True))

    def _train_batches(self, x: tf.Tensor, y: tf.Tensor, batches: tf.Tensor) -> tf.Tensor:
        """Train on `x[batches[i]]` for each row `i` of `batches`; return the loss sum.

        Gathering inside the loop costs one batch per step, where shuffling the whole
        training tensor first copies it every epoch (about 15% of an epoch here).
        """
        total = tf.constant(0.0, tf.float32)
        for i in tf.range(tf.shape(batches)[0]):
            total += self._train_step(tf.gather(x, batches[i]), tf.gather(y, batches[i]))
        return total

    def _batch_loss_sum(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return self._loss(x, y, training=False) * tf.cast(tf.shape(x)[0], tf.float32)

    def train_epoch(self, x: tf.Tensor, y: tf.Tensor, order: np.ndarray) -> float:
        """One pass in the order given; the sample-weighted mean loss, as Keras' fit reports."""
        n, size = int(x.shape[0]), self.batch_size
        full = (n // size) * size
        total = 0.0
        if full:
            total += float(self._batches(x, y, order[:full].reshape(-1, size))) * size
        if full < n:
            rest = order[full:]
            total += float(self._step(tf.gather(x, rest), tf.gather(y, rest))) * (n - full)
        return total / n

    def validation_loss(self, x: tf.Tensor, y: tf.Tensor) -> float:
        """Mean loss over the whole validation set, in one compiled call."""
        return float(self._val(x, y)) / int(x.shape[0])


def _state_variables(model: keras.Model) -> list:
    """Everything that determines the next epoch: weights, optimizer and noise generators."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return [*model.weights, *model.optimizer.variables, *random_states(model)]


def training_state(model: keras.Model) -> list[np.ndarray]:
    return [np.array(variable) for variable in _state_variables(model)]


def restore_training_state(model: keras.Model, arrays: list[np.ndarray]) -> None:
    for variable, value in zip(_state_variables(model), arrays, strict=True):
        variable.assign(value)


def check_loss(loss: float, epoch: int, model: keras.Model, name: str = "loss") -> float:
    """`loss`, unless training diverged (NaN, inf or beyond any sane value). `name` says which
    loss: the training loss, or the validation loss (a last step can blow the weights up after
    the training loss of the epoch was taken)."""
    if not math.isfinite(loss) or loss > LOSS_CEILING:
        raise TrainingDiverged(
            f"training diverged: {name} {loss:.4g} in epoch {epoch} (a sane run stays below "
            f"{LOSS_CEILING:g}); lower the learning rate "
            f"(currently {float(model.optimizer.learning_rate):g})"
        )
    return loss


def fit(
    model: keras.Model,
    inputs: np.ndarray,
    targets: np.ndarray,
    val_inputs: np.ndarray,
    val_targets: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    first_epoch: int = 1,
    on_epoch_end: Callable[[EpochResult], None] | None = None,
    jit_compile: bool = True,
    runner: Any = None,
) -> list[EpochResult]:
    """Train epochs `first_epoch..epochs` (later than 1 when resuming); stop, before the epoch is
    reported, at a NaN, infinite or exploding training or validation loss.

    `runner` (default: an `EpochRunner`) trains one epoch in a given order and computes the
    validation loss; `distributed.MultiWorkerRunner` does the same across workers.
    """
    runner = runner or EpochRunner(model, batch_size, jit_compile=jit_compile)
    x = tf.constant(inputs)
    y = x if targets is inputs else tf.constant(targets)
    val_x, val_y = tf.constant(val_inputs), tf.constant(val_targets)
    results = []
    for epoch in range(first_epoch, epochs + 1):
        started = time.perf_counter()
        loss = runner.train_epoch(x, y, epoch_permutation(seed, epoch, len(inputs)))
        seconds = time.perf_counter() - started
        check_loss(loss, epoch, model)
        val_loss = check_loss(runner.validation_loss(val_x, val_y), epoch, model, "val_loss")
        result = EpochResult(epoch, loss, val_loss, seconds)
        results.append(result)
        if on_epoch_end is not None:
            on_epoch_end(result)
    return results
