"""The processes of multi-worker training: each worker's TF_CONFIG, and starting them.

`distribute.strategy: multi_worker` makes a training stage a launcher: it starts
`distribute.workers` copies of itself on 127.0.0.1, each with its TF_CONFIG, and waits. This
happens before TensorFlow is imported (the strategy must exist before TensorFlow runs any op), so
nothing here imports it. On several machines, set TF_CONFIG on each yourself and run the stage
command there.

The workers die with their launcher on every path: killed outright with it (SIGKILL included),
ended when it is interrupted, and ended when one of them fails (the others would wait for it
forever in their next gradient sum). Their params reach them in an anonymous in-memory file, so
nothing is left on disk whatever happens.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.core import processes
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


@contextlib.contextmanager
def params_file(text: str) -> Iterator[tuple[Path, tuple[int, ...]]]:
    """A file holding `text` that the workers can read: (its path, descriptors to pass them).
    On Linux an anonymous memory file, gone with the last process that holds it; elsewhere a
    temporary file."""
    if hasattr(os, "memfd_create"):
        descriptor = os.memfd_create("aepipe-params")
        try:
            os.write(descriptor, text.encode())
            yield Path(f"/proc/self/fd/{descriptor}"), (descriptor,)
        finally:
            os.close(descriptor)
        return
    with tempfile.TemporaryDirectory(prefix="aepipe-workers-") as scratch:
        path = Path(scratch) / "params.yaml"
        path.write_text(text)
        yield path, ()


def launch(command: list[str], workers: int, params_text: str) -> int:
    """Run `command --params <file holding params_text>` as `workers` cooperating processes on
    this machine, each with its TF_CONFIG.

    Only the chief's standard output is shown; the exit status is the first non-zero one.
    """
    with params_file(params_text) as (path, descriptors):
        started = [
            subprocess.Popen(
                [*command, "--params", str(path)],
                env={**os.environ, "TF_CONFIG": config},
                stdout=None if index == 0 else subprocess.DEVNULL,
                pass_fds=descriptors,
                preexec_fn=functools.partial(processes.die_with_parent, os.getpid()),
            )
            for index, config in enumerate(tf_configs(workers))
        ]
        try:
            return _first_failure(started)
        finally:
            _end(started)


def _first_failure(started: list[subprocess.Popen]) -> int:
    """Wait until every worker has exited with 0 (return 0), or one has failed (its status)."""
    while True:
        codes = [worker.poll() for worker in started]
        if failed := next((code for code in codes if code), None):
            return failed
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.2)


def _end(started: list[subprocess.Popen]) -> None:
    """End the workers that still run (after a failure or an interrupt): SIGTERM, then SIGKILL."""
    for worker in started:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for worker in started:
        try:
            worker.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
