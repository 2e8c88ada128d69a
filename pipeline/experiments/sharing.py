"""`aepipe push`: what ran here, on the DVC remote, so that another clone's `dvc exp run --pull`
(or `dvc repro --pull`) restores any stage that ran here instead of running it again.

DVC restores a stage from its run cache only when every output the entry names is in the cache.
`dvc push --run-cache` sends the run-cache entries but only the workspace's outputs, and
`dvc exp push` an experiment's cached outputs but not those git keeps (the stages' `cache: false`
plots and metrics): after either, another clone reruns the stages of queued experiments. This
push sends the workspace's outputs, every run-cache entry, and every output the entries name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import one_line


@contextlib.contextmanager
def project(repo: Path, doing: str) -> Iterator[Any]:
    """The repository as a DVC `Repo`, in this process (a `dvc` process costs about a second of
    CPU before it does anything); DVC's errors become one line naming what was being done."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:  # in the repository: DVC resolves some of a run-cache entry's paths against the cwd
        with contextlib.chdir(repo), Repo(str(repo)) as opened:
            yield opened
    except DvcException as exc:
        raise RuntimeError(f"dvc {doing}: {one_line(exc)}") from None


def _entries(opened: Any) -> list[tuple[str, str]]:
    """Every run-cache entry of the project's cache, as (stage key, entry)."""
    runs = Path(opened.stage_cache.cache_dir)
    return [(entry.parent.name, entry.name) for entry in runs.glob("*/*/*") if entry.is_file()]


def push(opened: Any, remote: str | None = None) -> int:
    """Push to `remote` (default: the project's) the workspace's outputs, the run cache, and the
    outputs its entries name that this cache holds; return the number of files sent."""
    from dvc.exceptions import DvcException

    sent = opened.push(remote=remote, run_cache=True)
    local = opened.cache.local
    named = set()
    for entry in _entries(opened):
        # An entry pulled from the remote may name outputs this cache never received: those
        # are on the remote already, or nowhere.
        with contextlib.suppress(DvcException):
            for objects in opened.stage_cache.get_used_objs([entry]).values():
                named |= {obj for obj in objects if local.exists(obj.value)}
    result = opened.cloud.push(named, remote=remote)
    if result.failed:
        raise RuntimeError(f"dvc push: {len(result.failed)} file(s) could not be sent")
    return sent + len(result.transferred)
