"""The processes of multi-worker training: each worker's TF_CONFIG, and starting them.

`distribute.strategy: multi_worker` makes a training stage a launcher: it starts
`distribute.workers` copies of itself on 127.0.0.1, each with its TF_CONFIG, and waits. This
happens before TensorFlow is imported (the strategy must exist before TensorFlow runs any op), so
nothing here imports it. On several machines, set TF_CONFIG on each yourself and run the stage
command there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

from pipeline.core.errors import PipelineError

LOCALHOST = "127.0.0.1"


def worker_index() -> int | None:
    """This process's worker index from TF_CONFIG, or None when not part of a cluster."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return None
    try:
        parsed = json.loads(config)
        task = parsed["task"]
        after_chief = task["type"] == "worker" and "chief" in parsed["cluster"]
        return int(task["index"]) + (1 if after_chief else 0)
    except (ValueError, KeyError, TypeError) as exc:
        raise PipelineError(
            f"TF_CONFIG is not a TensorFlow cluster description ({exc!r}); unset it to train "
            "in one process, or see distribute.workers"
        ) from None


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


def launch(command: list[str], workers: int) -> int:
    """Run `command` as `workers` cooperating processes on this machine, each with its TF_CONFIG.

    Only the chief's standard output is shown; the exit status is the first non-zero one.
    """
    processes = [
        subprocess.Popen(
            command,
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
