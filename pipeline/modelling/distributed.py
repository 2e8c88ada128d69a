"""Multi-worker training with `tf.distribute.MultiWorkerMirroredStrategy`, driven by TF_CONFIG.

Every worker walks the same seeded epoch order; each global batch is split between the workers and
their gradients are summed, so the result equals single-process training up to the order of
floating-point sums. Only the chief (worker 0) writes outputs and logs to MLflow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from pipeline.modelling.training import gradient_step, mean_loss
from pipeline.modelling.workers import worker_index


def strategy():
    """Create the strategy first thing: TensorFlow must not have run ops before it."""
    return tf.distribute.MultiWorkerMirroredStrategy()


class MultiWorkerRunner:
    """`training.EpochRunner`'s interface, with every global batch split across the workers."""

    def __init__(self, strategy: Any, model: Any, batch_size: int):
        self.model = model
        self.batch_size = batch_size
        self.workers = strategy.num_replicas_in_sync
        self.me = worker_index() or 0
        per_sample = tf.keras.losses.get(model.loss)

        def step(x, y, global_size):
            def share_of_global_loss():  # the replicas' shares sum to the global batch's mean
                loss = tf.reduce_sum(per_sample(y, model(x, training=True))) / global_size
                for extra in model.losses:
                    loss += extra / self.workers
                return loss

            return gradient_step(model, share_of_global_loss)

        @tf.function
        def distributed_step(x, y, global_size):
            return strategy.reduce("SUM", strategy.run(step, args=(x, y, global_size)), axis=None)

        @tf.function
        def validation(x, y):
            return mean_loss(model, per_sample, x, y, training=False)

        self._step, self._validation = distributed_step, validation

    def train_epoch(self, x: Any, y: Any, order: np.ndarray) -> float:
        n, total = len(order), 0.0
        for start in range(0, n, self.batch_size):
            batch = order[start : start + self.batch_size]
            mine = np.array_split(batch, self.workers)[self.me]
            size = tf.constant(float(len(batch)))
            total += float(self._step(tf.gather(x, mine), tf.gather(y, mine), size)) * len(batch)
        return total / n

    def validation_loss(self, x: Any, y: Any) -> float:
        return float(self._validation(x, y))
