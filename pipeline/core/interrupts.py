"""Ctrl-C, SIGTERM and SIGHUP (the terminal closed) as KeyboardInterrupt, held back while a
write must not be cut in half.

An interrupt raised inside an MLflow call can leave its database connection mid-transaction, so
that ending the run as KILLED then fails and the run stays RUNNING. Blocks that write to the
store run under `held()`: a signal arriving there is raised as soon as the block ends. A second
signal meanwhile is raised at once (a store that hangs must not make Ctrl-C useless).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Held:
    depth = 0  # how many `held()` blocks are running
    pending: int | None = None  # a signal that arrived meanwhile


_state = _Held()


def _interrupt(signum: int, frame: object) -> None:
    if _state.depth and _state.pending is None:
        _state.pending = signum
        return
    _state.pending = None
    raise KeyboardInterrupt(f"signal {signum}")


def install() -> None:
    for signum in SIGNALS:
        signal.signal(signum, _interrupt)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Run the block to its end; an interrupt that arrived meanwhile is raised after it."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        pending = _state.pending
        if not _state.depth and pending is not None:
            _state.pending = None
            raise KeyboardInterrupt(f"signal {pending}")
