"""Multi-worker training with `tf.distribute.MultiWorkerMirroredStrategy`, driven by TF_CONFIG.

`distribute.strategy: multi_worker` makes a training stage a launcher: it starts
`distribute.workers` copies of itself on 127.0.0.1, each with its TF_CONFIG, and waits. Every
worker walks the same seeded epoch order; each global batch is split between the workers and
their gradients are summed, so the result equals single-process training up to the order of
floating-point sums. Only the chief (worker 0) writes outputs and logs to MLflow. On several
machines, set TF_CONFIG on each yourself and run the stage command there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import numpy as np

LOCALHOST = "127.0.0.1"


def worker_index() -> int | None:
    """This process's worker index from TF_CONFIG, or None when not part of a cluster."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return None
    parsed = json.loads(config)
    task = parsed["task"]
    after_chief = task["type"] == "worker" and "chief" in parsed["cluster"]
    return int(task["index"]) + (1 if after_chief else 0)


def is_chief() -> bool:
    return worker_index() in (None, 0)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOCALHOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_configs(workers: int) -> list[str]:
    cluster = {"worker": [f"{LOCALHOST}:{port}" for port in _free_ports(workers)]}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        for index in range(workers)
    ]


def launch(argv: list[str], workers: int) -> int:
    """Run `aepipe <argv>` as `workers` cooperating processes on this machine.

    Only the chief's standard output is shown; the exit status is the first non-zero one.
    """
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", *argv],
            env={**os.environ, "TF_CONFIG": config},
            stdout=None if index == 0 else subprocess.DEVNULL,
        )
        for index, config in enumerate(tf_configs(workers))
    ]
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait()
        raise
    return next((code for code in codes if code), 0)


def strategy():
    """Create the strategy first thing: TensorFlow must not have run ops before it."""
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


class MultiWorkerRunner:
    """`training.EpochRunner`'s interface, with every global batch split across the workers."""

    def __init__(self, strategy: Any, model: Any, batch_size: int):
        import tensorflow as tf

        from pipeline.training import gradient_step, mean_loss

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
        import tensorflow as tf

        n, total = len(order), 0.0
        for start in range(0, n, self.batch_size):
            batch = order[start : start + self.batch_size]
            mine = np.array_split(batch, self.workers)[self.me]
            size = tf.constant(float(len(batch)))
            total += float(self._step(tf.gather(x, mine), tf.gather(y, mine), size)) * len(batch)
        return total / n

    def validation_loss(self, x: Any, y: Any) -> float:
        return float(self._validation(x, y))
