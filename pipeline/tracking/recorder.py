"""A stage's MLflow run, kept by a helper process the stage starts.

MLflow's import and store take about 5 s and TensorFlow's import about 7 s, each on one core. The
helper opens the run while the stage imports TensorFlow and loads its data, so on two cores the
two overlap; afterwards logging calls are queued to the helper and do not wait for the store.

The stage waits for the run to be open (`RecordedRun.confirm`) before its expensive work, so an
unusable store still fails the stage in seconds, with the store's one-line message. At the end
the stage waits until every queued call is logged (Ctrl-C still ends the run KILLED then), and
only then sends the run's status; a logging failure fails the stage. An interrupted stage waits
at most GRACE_S for its run to be ended, then ends the helper. The helper ignores Ctrl-C (it runs
in its own session): the stage ends the run KILLED through it. If the stage dies outright, the
helper sees its pipe close and ends the run KILLED itself; if both die, the next stage's sweep
does (`runs.end_orphaned_runs`).
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

STARTED, FAILED, FLUSHED, ENDED = "started", "failed", "flushed", "ended"  # answers
END, FLUSH = "end", "flush"
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

    def confirm(self, patience: float | None = None) -> None:
        """Wait until the run is open; raise the store's error if it could not be opened."""
        if self._run_id is not None:
            return
        kind, value = self._reply(patience, STARTED, FAILED)
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

    def flush(self) -> None:
        """Wait until every queued call is logged (Ctrl-C still interrupts the wait); raise what
        could not be logged."""
        self.confirm()
        with interrupts.held():
            _send(self._connection, (FLUSH, (), {}))
        _, failure = self._reply(None, FLUSHED)
        if failure:
            raise TrackingError(failure)

    def end(self, status: str, patience: float | None = None) -> None:
        """End the run with `status`; raise what failed. With `patience`, wait at most that
        many seconds for each answer (a store that hangs must not hold an interrupted stage)."""
        with interrupts.held():
            self.confirm(patience)
            _send(self._connection, (END, (status,), {}))
            _, failure = self._reply(patience, ENDED)
        if failure:
            raise TrackingError(failure)

    def _reply(self, patience: float | None, *kinds: str) -> tuple[str, Any]:
        """The next answer of one of `kinds` (answers to an abandoned wait are skipped)."""
        while True:
            if patience is not None and not self._connection.poll(patience):
                raise PipelineError(RECORDER_SILENT)
            kind, value = _receive(self._connection)
            if kind in kinds:
                return kind, value


RECORDER_GONE = "the process that logs this stage to MLflow ended unexpectedly"
RECORDER_SILENT = "the process that logs this stage to MLflow did not answer; ended it"
GRACE_S = 10.0  # for an interrupted or failed stage's run to be ended


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

    Ends the run FINISHED (once every queued call is logged), FAILED (an exception) or KILLED
    (Ctrl-C, SIGTERM, SIGHUP, also while the last calls are being logged)."""
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
        run.flush()
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
                    run.end(status, GRACE_S)  # the stage's own error stays the one reported
        finally:
            with interrupts.held():
                ours.close()
                helper.join(None if status == "FINISHED" else GRACE_S)
                if helper.is_alive():  # ours, stuck on a store that does not answer
                    helper.kill()
                    helper.join()


def serve(connection: Connection, stage: str, tags: dict[str, str], diff: str | None) -> None:
    """The helper: open the run, then log each queued call until the stage ends it. A stage
    that disappears (its pipe closes) gets its run ended KILLED."""
    for signum in interrupts.SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    import os

    os.setsid()  # Ctrl-C at the terminal reaches the stage, which ends the run through us
    from pipeline.tracking import runs

    try:
        opened = runs.OpenedRun.open(stage, tags, diff)
    except Exception as exc:
        with contextlib.suppress(OSError):
            connection.send((FAILED, _message(exc)))
        return
    failure = None
    status = "KILLED"  # unless the stage says otherwise
    try:
        connection.send((STARTED, opened.run.run_id))
        with contextlib.suppress(Exception):
            opened.prepare()  # while the stage works: imports the later calls need
        while True:
            name, args, kwargs = connection.recv()
            if name == END:
                status = args[0] if failure is None else "FAILED"
                break
            if name == FLUSH:
                connection.send((FLUSHED, failure))
            elif failure is None and name in CALLS:
                try:
                    getattr(opened.run, name)(*args, **kwargs)
                except Exception as exc:
                    failure = _message(exc)
    except (EOFError, OSError):  # the stage's end of the pipe closed without an END
        opened.tag_ended_by(STAGE_DIED)
    except Exception as exc:  # a message it cannot read: end the run, say why
        failure, status = failure or _message(exc), "FAILED"
    try:
        opened.end(status)
    except Exception as exc:
        failure = failure or _message(exc)
    with contextlib.suppress(OSError):
        connection.send((ENDED, failure))


def _message(exc: BaseException) -> str:
    from pipeline.core.errors import one_line

    if isinstance(exc, PipelineError):
        return str(exc)
    return f"MLflow logging failed: {one_line(exc)}"
