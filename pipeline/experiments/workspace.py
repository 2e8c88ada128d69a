"""`aepipe restore`: the workspace back to the last commit's params and results.

A failed `dvc exp run` (or `dvc repro`) leaves the workspace changed: `params.yaml` keeps the value
that failed (and DVC may have reformatted it), `dvc.lock` records the stages that did run, and the
failing stage's outputs are gone (DVC deletes them before running it). Restoring takes the
committed `params.yaml`, `dvc.lock` and the outputs git keeps (the small reports, `cache: false`)
from git, and checks out every other output they record from DVC's cache. Other uncommitted
changes (code, README) are left alone.

It never destroys the only copy of a result: an output whose bytes neither DVC's cache nor git
holds (a stage run by hand, or outside DVC) is copied to `.aepipe/saved/<time>/` first, and its
path printed, before it is replaced.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import yaml

from pipeline.core import paths
from pipeline.core.errors import PipelineError
from pipeline.core.files import dvc_md5, file_digest
from pipeline.core.shell import commit_of, dvc, dvc_error, git

SAVED_DIR = paths.STATE_DIR / "saved"

RESTORED = ("params.yaml", "dvc.lock")


def restore(root: Path) -> list[str]:
    """Restore; return what was done, one line each."""
    if not commit_of("HEAD", root):
        raise PipelineError(f"{root}: no git commit to restore from")
    outputs = _lock_outputs(root)
    candidates = [*RESTORED, *outputs]
    committed = git(
        "ls-tree", "-r", "--name-only", "HEAD", "--", *candidates, cwd=root, check=False
    ).split()
    changed = git("diff", "--name-only", "HEAD", "--", *committed, cwd=root, check=False).split()
    done = [
        f"saved {path} to {copy}: DVC's cache has no copy"
        for path, copy in save_uncached(root, outputs)
    ]
    if changed:
        git("checkout", "HEAD", "--", *changed, cwd=root)
        done.append(f"restored {', '.join(changed)}: back to the last commit")
    result = dvc("checkout", "--force", cwd=root)
    if result.returncode != 0:
        raise PipelineError(
            f"dvc checkout could not restore every output ({dvc_error(result.stderr)}): "
            "what is not in the DVC cache, `dvc pull` fetches or `dvc repro` remakes"
        )
    done.append("restored outputs: as dvc.lock records them (dvc checkout)")
    return done


def _lock_outputs(root: Path) -> dict[str, str]:
    """Output path -> md5 of every output the committed dvc.lock records (what checkout makes)."""
    text = git("show", "HEAD:dvc.lock", cwd=root, check=False)
    try:
        stages = (yaml.safe_load(text) or {}).get("stages", {})
    except yaml.YAMLError:
        return {}
    return {
        out["path"]: str(out.get("md5", ""))
        for body in stages.values()
        if isinstance(body, dict)
        for out in body.get("outs", [])
        if isinstance(out, dict) and "path" in out
    }


def _kept(cache, root: Path, path: Path) -> bool:
    """Whether DVC's cache, or git's objects, hold every file of `path` as it is now."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    if all(cache.exists(file_digest(file)) for file in files):
        return True
    blobs = git("hash-object", "--", *map(str, files), cwd=root, check=False).split()
    found = git("cat-file", "--batch-check", cwd=root, check=False, stdin="\n".join(blobs) + "\n")
    return len(blobs) == len(files) and found.count(" blob ") == len(blobs)


def save_uncached(root: Path, outputs: dict[str, str]) -> list[tuple[str, Path]]:
    """Copy aside every one of `outputs` (path -> md5 the committed dvc.lock records) that
    `dvc checkout` would replace and neither DVC's cache nor git holds; return (output, where
    its copy is)."""
    from dvc.repo import Repo

    cache = Repo(str(root)).cache.local
    saved = []
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"  # two restores at once: two
    for name, md5 in outputs.items():
        path = root / name
        if not path.exists() or dvc_md5(path) == md5 or _kept(cache, root, path):
            continue
        copy = root / SAVED_DIR / stamp / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, copy, symlinks=True)
        else:
            shutil.copy2(path, copy)
        saved.append((name, copy.relative_to(root)))
    return saved
