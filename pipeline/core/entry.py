"""How every `aepipe` command and every stage process starts and ends.

Errors a user can fix end as one line on stderr and exit status 2. Ctrl-C, SIGTERM and SIGHUP (the
terminal closed) end as "interrupted", exit status 130, after the command's own cleanup ran
(MLflow runs marked KILLED, temporary files removed).
"""

from __future__ import annotations

import argparse
import atexit
import errno
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from pipeline.core import interrupts, params_guard, paths, processes, warm
from pipeline.core.config import load_params
from pipeline.core.errors import PipelineError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


# MLflow retries a failing request 7 times with a doubling pause (about 4 minutes) and waits 120
# s for each answer: a tracking server that has stopped would hold a stage that long before its
# one line. These give up within seconds on a refused connection, within a minute on a server
# that accepts and never answers; set them in the environment to choose otherwise.
MLFLOW_PATIENCE = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def run_command(name: str, command: Callable[[], int | None]) -> int:
    """Run `command()`; turn what a user can fix into one line, and signals into Ctrl-C."""
    for variable, value in warm.IMPORT_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for variable, value in MLFLOW_PATIENCE.items():
        os.environ.setdefault(variable, value)
    interrupts.install()
    try:
        status = command()
    except PipelineError as exc:
        print(f"aepipe {name}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if exc.filename is None:  # not about a path the user can fix: a bug to see in full
            raise
        print(f"aepipe {name}: error: {file_error(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"aepipe {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status or 0


FILE_ERROR_HINTS = {
    errno.ENOTDIR: "a file stands where a directory is needed: move it away",
    errno.EISDIR: "a directory stands where a file is needed: move it away",
    errno.EEXIST: "something already stands there: move it away",
    errno.EACCES: "no permission: check the owner and mode of the path and its directories",
    errno.EPERM: "not permitted: check the owner and mode of the path and its directories",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.ENOENT: "a directory on the way does not exist",
}


def file_error(exc: OSError) -> str:
    """A failed read or write of a path, as one line: the path, what failed, what to do."""
    where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    reason = exc.strerror or type(exc).__name__
    hint = FILE_ERROR_HINTS.get(exc.errno or 0)
    return f"{where}: {reason}" + (f" ({hint})" if hint else "")


def runs_the_code_here(root: Path | None = None) -> None:
    """DVC runs `python -m pipeline.stages.<name>` in the repository (a queued experiment: in its
    temporary copy) so that this copy's code runs, and a sweep's Ray workers import the code of
    the directory it was started in. `PYTHONSAFEPATH`, or an `aepipe` installed from another
    checkout, would run other code than `dvc.yaml` tracks: refuse."""
    import pipeline

    here, loaded = (root or Path.cwd()) / "pipeline", Path(pipeline.__file__).parent
    if here.is_dir() and here.resolve() != loaded.resolve():
        raise PipelineError(
            f"this runs the code in {loaded}, not this repository's {here} (is PYTHONSAFEPATH "
            "set, or aepipe installed from another checkout? run `python -m pipeline` here)"
        )


def end_with_the_pipeline() -> None:
    """A stage dies with the `dvc repro` / `dvc exp run` that started it: when that process is
    gone (killed), the stage gets SIGTERM, so it ends its MLflow run KILLED and writes nothing
    more, rather than train on unseen and overwrite a model a minute later. A stage run by hand
    has no such process."""
    pipeline = processes.pipeline_process()
    if pipeline.pid == os.getpid():
        return
    identity = processes.process_identity(pipeline)
    _pipeline.append(identity)

    def watch() -> None:
        while not processes.process_gone(identity):
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="end-with-the-pipeline").start()


_pipeline: list[str] = []  # the identity of the process this stage ends with, if any


def the_pipeline_goes_on() -> None:
    """Stop the stage (as SIGTERM would) if its `dvc` process is gone: called before a stage
    writes a result, where the watcher's next look could come too late."""
    if _pipeline and processes.process_gone(_pipeline[0]):
        raise KeyboardInterrupt("the dvc process that started this stage is gone")


SYSTEM_TMPDIR = warm.SYSTEM_TMPDIR  # the temporary directory the stage's own replaced


def private_temporary_directory() -> None:
    """Temporary files of this stage and of the workers it starts (TensorFlow's generated code,
    scikit-learn's and MLflow's scratch files) under `.aepipe/tmp/<process>`: removed when the
    stage ends, and, for a stage killed outright, when the next stage starts. The recorder, which
    may outlive the stage, keeps the system's."""
    root = paths.STATE_DIR / "tmp"
    host = platform.node()
    for directory in root.glob("*-*"):  # <pid>-<start time>, of a process of this machine
        if processes.process_gone(f"{host}:{directory.name.replace('-', ':', 1)}"):
            shutil.rmtree(directory, ignore_errors=True)
    _, pid, started = processes.process_identity(psutil.Process()).split(":")
    private = root / f"{pid}-{started}"
    private.mkdir(parents=True, exist_ok=True)
    private = private.resolve()  # the stage's workers may run elsewhere
    os.environ.setdefault(SYSTEM_TMPDIR, tempfile.gettempdir())
    os.environ["TMPDIR"] = str(private)
    tempfile.tempdir = str(private)
    atexit.register(shutil.rmtree, private, ignore_errors=True)


def stage_main(
    name: str,
    run: Callable[..., None],
    argv: Sequence[str] | None = None,
    choices: dict[str, Sequence[str]] | None = None,
) -> int:
    """The command line of a stage module: `python -m pipeline.stages.<name> [--params F]`.

    `choices` adds positional arguments (name -> allowed values), passed to `run` by name.
    """
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{name}")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    for argument, allowed in (choices or {}).items():
        parser.add_argument(argument, choices=allowed)
    args = parser.parse_args(argv)
    given = {argument: getattr(args, argument) for argument in choices or {}}

    def command() -> None:
        runs_the_code_here()
        end_with_the_pipeline()
        private_temporary_directory()
        params = load_params(args.params)
        params_guard.remember(args.params, params)
        run(params, **given)

    return run_command(name, command)
