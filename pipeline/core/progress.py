"""Progress of long stage work: one line per finished step with the seconds since the stage
began, printed as it happens (flushed, so `dvc repro` and pipes show it at once, not at the end)."""

from __future__ import annotations

import time
from collections.abc import Callable

Report = Callable[[str], None]


def silent(message: str) -> None:
    """For callers that want no progress lines (tests, library use)."""


def printer(stage: str) -> Report:
    began = time.monotonic()

    def report(message: str) -> None:
        print(f"{stage}: [{time.monotonic() - began:5.1f} s] {message}", flush=True)

    return report


def scores(values: dict[str, float]) -> str:
    """`name 0.9123, other 0.9050`: a few named numbers in one progress line."""
    return ", ".join(f"{name} {value:.4f}" for name, value in values.items())
