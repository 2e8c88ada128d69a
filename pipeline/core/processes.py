"""Which process is which: an identity that survives pid reuse, whether a process has ended, and
the `dvc repro` / `dvc exp run` process a stage runs under.

MLflow runs, pipeline-run snapshots and the team server's records name processes by identity,
so that cleaning up after a killed process never touches another one that reuses its pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import signal
import uuid
from pathlib import Path

import psutil

STAGE_PID_ENV = "AEPIPE_STAGE_PID"  # set by the stage host in the child that runs a stage


def process_identity(process: psutil.Process) -> str:
    """`host:pid:start time`: one process, also after its pid is reused by another."""
    return f"{platform.node()}:{process.pid}:{process.create_time():.3f}"


def process_gone(identity: str) -> bool:
    """True if `identity` (see `process_identity`) names a process of this host that has ended;
    False while it runs, and for other hosts or unreadable identities (nothing is known)."""
    host, _, rest = identity.partition(":")
    pid, _, started = rest.partition(":")
    if host != platform.node() or not pid.isdigit():
        return False
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" != started
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def pipeline_process() -> psutil.Process:
    """The `dvc repro` / `dvc exp run` process this stage runs under (the nearest `dvc`
    ancestor), or this process when a stage is run by hand. A stage run by the stage host looks
    from the process DVC started, which stands in for it."""
    stand_in = os.environ.get(STAGE_PID_ENV)
    try:
        me = psutil.Process(int(stand_in)) if stand_in else psutil.Process()
    except (psutil.Error, ValueError):
        me = psutil.Process()
    try:
        return next((p for p in me.parents() if _is_dvc_command(p.cmdline())), me)
    except (psutil.Error, OSError):
        return me


def pipeline_run_id() -> str:
    """One id shared by every stage started by the same `dvc repro` / `dvc exp run` process.

    DVC starts each stage as a child process and tells it nothing that identifies the run, so
    the id is derived from the nearest `dvc` ancestor process (pid and start time). A stage run
    by hand gets an id of its own. `AEPIPE_PIPELINE_RUN` overrides both.
    """
    if configured := os.environ.get("AEPIPE_PIPELINE_RUN"):
        return configured
    try:
        key = process_identity(pipeline_process())
    except (psutil.Error, OSError):
        return uuid.uuid4().hex[:16]
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _is_dvc_command(argv: list[str]) -> bool:
    for index, part in enumerate(argv[:3]):
        if Path(part).name == "dvc" or (part == "-m" and argv[index + 1 : index + 2] == ["dvc"]):
            return True
    return False


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """In a child process of `parent` (its pid): get `signum` (SIGKILL: be killed outright) when
    the parent dies (Linux; a no-op elsewhere), so that a SIGKILL of a stage leaves none of its
    workers running. A parent that died before this call ends the child at once."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        os._exit(1)
