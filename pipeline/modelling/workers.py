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
import sys
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


PORT_TAKEN = "Could not start gRPC server"  # TensorFlow, when another program took a port


def launch(command: list[str], workers: int, params_text: str) -> None:
    """Run `command --params <file holding params_text>` as `workers` cooperating processes on
    this machine, each with its TF_CONFIG; raise in one line naming the first that failed.

    Only the chief's standard output is shown; what the workers print on stderr is kept and
    shown afterwards (the chief's), or quoted in the error (a failed worker's). The ports are
    chosen free just before the workers bind them; one another program takes meanwhile makes
    TensorFlow fail, and the launch is tried once more with other ports.
    """
    for attempt in (1, 2):
        failure = _launch_once(command, workers, params_text)
        if failure is None:
            return
        if PORT_TAKEN not in failure or attempt == 2:
            raise PipelineError(f"a training worker failed: {failure}")


def _launch_once(command: list[str], workers: int, params_text: str) -> str | None:
    """One launch; None if every worker succeeded, else the first failure in one line."""
    with (
        params_file(params_text) as (path, descriptors),
        tempfile.TemporaryDirectory(prefix="aepipe-workers-") as logs,
    ):
        errors = [Path(logs) / f"worker{index}.err" for index in range(workers)]
        started = []
        for index, config in enumerate(tf_configs(workers)):
            with open(errors[index], "wb") as stderr:
                started.append(
                    subprocess.Popen(
                        [*command, "--params", str(path)],
                        env={**os.environ, "TF_CONFIG": config},
                        stdout=None if index == 0 else subprocess.DEVNULL,
                        stderr=stderr,
                        pass_fds=descriptors,
                        preexec_fn=functools.partial(processes.die_with_parent, os.getpid()),
                    )
                )
        try:
            failed = _first_failure(started)
        finally:
            _end(started)
        sys.stderr.write(errors[0].read_text(errors="replace"))  # the chief's, as it would be
        if failed is None:
            return None
        index, code = failed
        return f"worker {index} exited with status {code}: {_last_error(errors[index])}"


def _last_error(log: Path) -> str:
    """The line that says what went wrong: the stage's own one line, else the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    own = next((line for line in reversed(lines) if line.startswith("aepipe ")), None)
    return own or (lines[-1] if lines else "no message")


def _first_failure(started: list[subprocess.Popen]) -> tuple[int, int] | None:
    """Wait until every worker has exited with 0 (None), or one has failed: (its index, its
    status)."""
    while True:
        codes = [worker.poll() for worker in started]
        failed = next(((index, code) for index, code in enumerate(codes) if code), None)
        if failed:
            return failed
        if all(code == 0 for code in codes):
            return None
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
