"""How every `aepipe` command and every stage process starts and ends.

Errors a user can fix end as one line on stderr and exit status 2. Ctrl-C, SIGTERM and SIGHUP (the
terminal closed) end as "interrupted", exit status 130, after the command's own cleanup ran
(MLflow runs marked KILLED, temporary files removed).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.core import interrupts
from pipeline.core.config import load_params
from pipeline.core.errors import PipelineError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run_command(name: str, command: Callable[[], int | None]) -> int:
    """Run `command()`; turn what a user can fix into one line, and signals into Ctrl-C."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    interrupts.install()
    try:
        status = command()
    except PipelineError as exc:
        print(f"aepipe {name}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"aepipe {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status or 0


def _runs_the_code_here() -> None:
    """DVC runs `python -m pipeline.stages.<name>` in the repository (a queued experiment: in its
    temporary copy) so that this copy's code runs. `PYTHONSAFEPATH` would make Python take an
    installed copy instead; refuse rather than run other code than `dvc.yaml` tracks."""
    import pipeline

    here, loaded = Path.cwd() / "pipeline", Path(pipeline.__file__).parent
    if here.is_dir() and here.resolve() != loaded.resolve():
        raise PipelineError(
            f"this stage would run the code in {loaded}, not this repository's {here} "
            "(is PYTHONSAFEPATH set? unset it)"
        )


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
        _runs_the_code_here()
        run(load_params(args.params), **given)

    return run_command(name, command)
