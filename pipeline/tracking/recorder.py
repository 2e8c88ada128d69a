"""A stage's MLflow run, kept by a recorder process the stage starts.

MLflow's import and store, and TensorFlow's import, each take seconds of one core. The
recorder (`python -m pipeline.tracking.recorder`, in a session of its own so that Ctrl-C at the
terminal reaches only the stage) opens the run while the stage imports TensorFlow and loads its
data; afterwards the stage's logging calls are queued to it and do not wait for the store.

The stage waits for the run to be open (`StageRun.confirm`) before its expensive work, so an
unusable store still fails the stage in seconds, with the store's one-line message.

How the run ends does not depend on timing. The stage sends the run's status (FINISHED once
every queued call is logged, FAILED on an error, KILLED on Ctrl-C, SIGTERM or SIGHUP) as the last
message of its queue, also before the run is open; the recorder logs what came before it, then
ends the run with that status. A stage that fails or is interrupted waits at most GRACE_S for
that; the recorder then finishes on its own and leaves at most LINGER_S after its stage is gone
(a store that does not answer at all). If the stage dies outright (SIGKILL), the recorder sees
its end of the connection close and ends the run KILLED; if both die, the next stage's sweep does
(`runs.end_orphaned_runs`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pipeline
from pipeline.core import interrupts, processes
from pipeline.core.errors import PipelineError, TrackingError

if TYPE_CHECKING:
    from pipeline.core.config import Params

STARTED, FAILED, FLUSHED, ENDED = "started", "failed", "flushed", "ended"  # answers
END, FLUSH = "end", "flush"
STAGE_DIED = "its logging process: the stage process ended without ending it"
RECORDER_GONE = "the process that logs this stage to MLflow ended unexpectedly"
RECORDER_SILENT = "the process that logs this stage to MLflow did not answer"
GRACE_S = 10.0  # how long a failed or interrupted stage waits for its run to be ended
LINGER_S = 60.0  # how long a recorder may outlive its stage, to end the run it was told to
# The calls a stage may queue: methods of `runs.RunLogger`, run in the recorder.
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


class StageRun:
    """The stage's side of its MLflow run: each logging call is queued to the recorder and
    returns at once; a call that fails there fails the stage when it ends."""

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

    def take_over(self, interrupted_run_id: str, epochs_done: int) -> None:
        """Record that this run resumes an interrupted one, and end that one as KILLED."""
        self._queue("take_over", interrupted_run_id, epochs_done)

    def log_params(self, params: dict[str, Any]) -> None:
        self._queue("log_params", params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._queue("log_metrics", metrics, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._queue("set_tags", tags)

    def log_metric_tree(self, tree: dict, model_files: dict[str, Path] | None = None) -> None:
        """The numeric leaves of metrics.json; those under a key of `model_files` also as
        metrics of the logged model of that file."""
        self._queue("log_metric_tree", tree, model_files)

    def log_artifact(self, path: Path, directory: str | None = None) -> None:
        self._queue("log_artifact", path, directory)

    def log_directory(self, directory: Path, artifact_path: str) -> None:
        self._queue("log_directory", directory, artifact_path)

    def log_model_file(self, model_file: Path, example_inputs: Any, example_outputs: Any) -> None:
        """The `.keras` file as an MLflow model that serves without this project."""
        self._queue("log_model_file", model_file, example_inputs, example_outputs)

    def log_outputs(self, outputs: list[Path]) -> None:
        """Each DVC output's md5 as a tag, and its exact bytes under `dvc_outputs/`."""
        self._queue("log_outputs", outputs)

    def flush(self) -> None:
        """Wait until every queued call is logged (Ctrl-C still interrupts the wait); raise what
        could not be logged."""
        self.confirm()
        self._queue(FLUSH)
        _, failure = self._reply(None, FLUSHED)
        if failure:
            raise TrackingError(failure)

    def end(self, status: str, patience: float | None = None) -> None:
        """Tell the recorder to end the run with `status` once the calls before are logged, and
        wait for that (with `patience`, at most that many seconds); raise what failed."""
        self._queue(END, status)
        with interrupts.held():
            _, value = self._reply(patience, ENDED, FAILED)
        if value:
            raise TrackingError(value)

    def _queue(self, name: str, *args: Any, **kwargs: Any) -> None:
        with interrupts.held():  # a message cut in half would garble the rest
            _send(self._connection, (name, args, kwargs))

    def _reply(self, patience: float | None, *kinds: str) -> tuple[str, Any]:
        """The next answer of one of `kinds` (answers to an abandoned wait are skipped)."""
        while True:
            if patience is not None and not self._connection.poll(patience):
                raise PipelineError(RECORDER_SILENT)
            kind, value = _receive(self._connection)
            if kind in kinds:
                return kind, value


def _send(connection: Connection, message: tuple) -> None:
    try:
        connection.send(message)
    except OSError:  # its end of the connection closed: it crashed or was killed
        raise PipelineError(RECORDER_GONE) from None


def _receive(connection: Connection) -> tuple[str, Any]:
    try:
        return connection.recv()
    except (EOFError, OSError):
        raise PipelineError(RECORDER_GONE) from None


@contextlib.contextmanager
def stage_run(stage: str, inputs: list[Path], params: Params) -> Iterator[StageRun]:
    """The MLflow run of `stage`, nested under its pipeline run, tagged with lineage; kept by a
    recorder process, so that opening it overlaps the stage's own start.

    Ends it FINISHED, FAILED (an exception, or params.yaml changed meanwhile) or KILLED (Ctrl-C,
    SIGTERM, SIGHUP). Call `confirm()` on the yielded run before expensive work: it raises a
    store's error.
    """
    from pipeline.core import params_guard
    from pipeline.tracking import provenance, runs
    from pipeline.tracking.store import configured_uri, ensure_reachable

    uri, _ = configured_uri()
    ensure_reachable(uri)
    git = provenance.git_state()
    tags = runs.lineage_tags(stage, inputs, git, params)
    tags[runs.TAG_GROUP_PROCESS] = processes.process_identity(processes.pipeline_process())
    with recording(stage, tags, git.diff) as run:
        yield run
        params_guard.unchanged()  # else the run's results are not those of its params


@contextlib.contextmanager
def recording(stage: str, tags: dict[str, str], diff: str | None) -> Iterator[StageRun]:
    """Start the recorder that opens `stage`'s run with `tags`; yield the stage's side of it;
    end the run as the block ended."""
    from pipeline.tracking.tags import TAG_DEP, tagged_md5s

    ours, theirs = socket.socketpair()
    code = os.pathsep.join(
        [str(Path(pipeline.__file__).parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    command = [sys.executable, "-m", "pipeline.tracking.recorder", str(theirs.fileno())]
    with interrupts.held():
        if os.environ.get(processes.STAGE_PID_ENV):  # run by the stage host: MLflow is imported
            recorder: subprocess.Popen | _Forked = _Forked.start(theirs, ours, code)
        else:
            recorder = subprocess.Popen(
                [*command, str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # Ctrl-C at the terminal is the stage's to handle
                env=_recorder_environment(code),
            )
        theirs.close()
        connection = Connection(ours.detach())
    run = StageRun(connection, tagged_md5s(tags, TAG_DEP))
    status = "FAILED"
    try:
        _send(connection, (stage, tags, diff))
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
                connection.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                # Not killed if it is still busy: it ends the run with the status it was sent.
                recorder.wait(None if status == "FINISHED" else GRACE_S)


class _Forked:
    """A recorder forked from a stage that the stage host runs, which has MLflow imported
    already (a fresh recorder process would import it again, while the stage waits for its
    run to open). The same process otherwise: its own session, the stage as its parent."""

    def __init__(self, pid: int):
        self.pid = pid

    @classmethod
    def start(cls, theirs: socket.socket, ours: socket.socket, code: str) -> _Forked:
        stage = os.getpid()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid:
            return cls(pid)
        status = 0
        try:
            os.setsid()
            ours.close()
            environment = _recorder_environment(code)
            os.environ.clear()
            os.environ.update(environment)
            tempfile.tempdir = None
            main(theirs.fileno(), stage)
        except BaseException:
            status = 1
            with contextlib.suppress(Exception):
                sys.excepthook(*sys.exc_info())
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(status)  # not the stage's atexit handlers, nor its module teardown

    def wait(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not _reaped(self.pid):
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("recorder", timeout or 0)
            time.sleep(0.02)


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:  # reaped already
        return True


def _recorder_environment(code: str) -> dict[str, str]:
    """The stage's environment with this copy of the code first, and the system's temporary
    directory (the stage's own is removed when the stage ends; the recorder may outlive it)."""
    from pipeline.core.entry import SYSTEM_TMPDIR

    environment = {**os.environ, "PYTHONPATH": code}
    if system := environment.pop(SYSTEM_TMPDIR, None):
        environment["TMPDIR"] = system
    return environment


def serve(connection: Connection, stage: str, tags: dict[str, str], diff: str | None) -> None:
    """The recorder: open the run, then log each queued call until the stage ends it. A stage
    that disappears (its connection closes) gets its run ended KILLED."""
    from pipeline.tracking.runs import RunLogger

    try:
        logger = RunLogger.open(stage, tags, diff)
    except Exception as exc:
        _answer(connection, (FAILED, _message(exc)))
        return
    failure = None
    status = "KILLED"  # unless the stage says otherwise
    try:
        _answer(connection, (STARTED, logger.run_id))
        with contextlib.suppress(Exception):
            logger.prepare()  # while the stage works: imports the later calls need
        while True:
            name, args, kwargs = connection.recv()  # what the stage sent, also if it has left
            if name == END:
                status = args[0] if failure is None else "FAILED"
                break
            if name == FLUSH:
                _answer(connection, (FLUSHED, failure))
            elif failure is None and name in CALLS:
                try:
                    getattr(logger, name)(*args, **kwargs)
                except Exception as exc:
                    failure = _message(exc)
    except (EOFError, OSError):  # the stage's end closed without an END
        logger.tag_ended_by(STAGE_DIED)
    except Exception as exc:  # a message it cannot read: end the run, say why
        failure, status = failure or _message(exc), "FAILED"
    try:
        logger.end(status)
    except Exception as exc:
        failure = failure or _message(exc)
    _answer(connection, (ENDED, failure))


def _answer(connection: Connection, message: tuple) -> None:
    """Send an answer, if the stage still listens (one that stopped waiting closed its end;
    its queued messages, its status included, are read all the same)."""
    with contextlib.suppress(OSError):
        connection.send(message)


def _message(exc: BaseException) -> str:
    from pipeline.core.errors import one_line
    from pipeline.tracking.store import configured_uri

    if isinstance(exc, PipelineError):
        return str(exc)
    text = one_line(exc)
    if "Max retries exceeded" in text or "Connection refused" in text:
        return (
            f"MLflow tracking server {configured_uri()[0]} stopped answering; this stage's run "
            "stays RUNNING there until a stage (or `aepipe validate`) reaches it again and "
            "ends it KILLED"
        )
    return f"MLflow logging failed: {text}"


def _leave_after_the_stage(stage_pid: int, linger: float) -> None:
    """End this process at most `linger` seconds after the stage that started it has ended (a
    store that never answers must not keep it alive)."""

    def watch() -> None:
        while os.getppid() == stage_pid:
            time.sleep(0.5)
        time.sleep(linger)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="leave-after-the-stage").start()


def main(descriptor: int, stage_pid: int) -> None:
    for signum in interrupts.SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    _leave_after_the_stage(stage_pid, LINGER_S)
    connection = Connection(descriptor)
    try:
        stage, tags, diff = connection.recv()
    except (EOFError, OSError):
        return  # the stage was gone before it said which run to open
    serve(connection, stage, tags, diff)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
