"""A stage's MLflow run, kept by a helper process the stage starts.

MLflow's import and store take about 5 s and TensorFlow's import about 7 s, each on one core. The
helper opens the run while the stage imports TensorFlow and loads its data, so on two cores the
two overlap; afterwards logging calls are queued to the helper and do not wait for the store.

The stage waits for the run to be open (`RecordedRun.confirm`) before its expensive work, so an
unusable store still fails the stage in seconds, with the store's one-line message. At the end
the stage sends the run's status and waits until every queued call is logged; a logging failure
then fails the stage. The helper ignores Ctrl-C (it runs in its own session): the stage ends the
run KILLED through it. If the stage dies outright, the helper sees its pipe close and ends the run
KILLED itself; if both die, the next stage's sweep does (`runs.end_orphaned_runs`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from pipeline.core import interrupts
from pipeline.core.errors import PipelineError, TrackingError

STARTED, FAILED, ENDED = "started", "failed", "ended"
END = "end"
STAGE_DIED = "its logging process: the stage process ended without ending it"
# Calls the stage may queue; each is a method of `runs.StageRun`, run in the helper.
CALLS = frozenset(
    {
        "take_over",
        "log_params",
        "log_metrics",
        "set_tags",
        "log_metric_tree",
        "log_artifact",
        "log_directory",
        "log_model_file",
        "log_outputs",
    }
)


class RecordedRun:
    """The stage's side of the run: each call is queued to the helper and returns at once."""

    def __init__(self, connection: Connection, input_md5s: dict[str, str]):
        self._connection = connection
        self._run_id: str | None = None
        self.input_md5s = input_md5s  # path -> md5 of each input, as DVC computes it

    def confirm(self) -> None:
        """Wait until the run is open; raise the store's error if it could not be opened."""
        if self._run_id is not None:
            return
        kind, value = _receive(self._connection)
        if kind != STARTED:
            raise TrackingError(value)
        self._run_id = value

    @property
    def run_id(self) -> str:
        self.confirm()
        assert self._run_id is not None
        return self._run_id

    def __getattr__(self, name: str) -> Any:
        if name not in CALLS:
            raise AttributeError(name)

        def queued(*args: Any, **kwargs: Any) -> None:
            with interrupts.held():  # a message cut in half would garble the rest
                _send(self._connection, (name, args, kwargs))

        return queued

    def end(self, status: str) -> None:
        """End the run with `status` once every queued call is logged; raise what failed (the
        run could not be opened, or a call could not be logged)."""
        with interrupts.held():
            self.confirm()
            _send(self._connection, (END, (status,), {}))
            kind, value = _receive(self._connection)
        if kind == FAILED:
            raise TrackingError(value)


RECORDER_GONE = "the process that logs this stage to MLflow ended unexpectedly"


def _send(connection: Connection, message: tuple) -> None:
    try:
        connection.send(message)
    except OSError:  # its end of the pipe closed: it crashed or was killed
        raise PipelineError(RECORDER_GONE) from None


def _receive(connection: Connection) -> tuple[str, Any]:
    try:
        return connection.recv()
    except (EOFError, OSError):
        raise PipelineError(RECORDER_GONE) from None


@contextlib.contextmanager
def recorded_run(stage: str, tags: dict[str, str], diff: str | None) -> Iterator[RecordedRun]:
    """Start the helper that opens `stage`'s run with `tags`; yield the stage's side of it.

    Ends the run FINISHED, FAILED (an exception) or KILLED (Ctrl-C, SIGTERM, SIGHUP)."""
    from pipeline.tracking.tags import TAG_DEP, tagged_md5s

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    helper = context.Process(
        target=serve, args=(theirs, stage, tags, diff), name=f"mlflow-{stage}", daemon=False
    )
    with interrupts.held():
        helper.start()
    theirs.close()
    run = RecordedRun(ours, tagged_md5s(tags, TAG_DEP))
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            if status == "FINISHED":
                run.end(status)
            else:
                with contextlib.suppress(PipelineError):
                    run.end(status)  # the stage's own error stays the one reported
        finally:
            with interrupts.held():
                ours.close()
                helper.join()


def serve(connection: Connection, stage: str, tags: dict[str, str], diff: str | None) -> None:
    """The helper: open the run, then log each queued call until the stage ends it."""
    for signum in interrupts.SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    import os

    os.setsid()  # Ctrl-C at the terminal reaches the stage, which ends the run through us
    from pipeline.tracking import runs

    try:
        opened = runs.OpenedRun.open(stage, tags, diff)
    except Exception as exc:
        connection.send((FAILED, _message(exc)))
        return
    connection.send((STARTED, opened.run.run_id))
    opened.prepare()  # while the stage works: imports the later calls need
    failure = None
    status = "KILLED"  # unless the stage says otherwise: its pipe closed without an end
    while True:
        try:
            name, args, kwargs = connection.recv()
        except (EOFError, OSError):
            opened.tag_ended_by(STAGE_DIED)
            break
        if name == END:
            status = args[0] if failure is None else "FAILED"
            break
        if failure is None and name in CALLS:
            try:
                getattr(opened.run, name)(*args, **kwargs)
            except Exception as exc:
                failure = _message(exc)
    try:
        opened.end(status)
    except Exception as exc:
        failure = failure or _message(exc)
    with contextlib.suppress(OSError):
        connection.send((FAILED, failure) if failure else (ENDED, None))


def _message(exc: BaseException) -> str:
    from pipeline.core.errors import one_line

    if isinstance(exc, PipelineError):
        return str(exc)
    return f"MLflow logging failed: {one_line(exc)}"
