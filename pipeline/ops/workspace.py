"""`aepipe restore`: the workspace back to the last commit's params and results.

A failed `dvc exp run` (or `dvc repro`) leaves the workspace changed: `params.yaml` keeps the value
that failed (and DVC may have reformatted it), `dvc.lock` records the stages that did run, and the
failing stage's outputs are gone (DVC deletes them before running it). Restoring takes the
committed `params.yaml` and `dvc.lock` and checks out every output they record from DVC's cache.
Other uncommitted changes (code, README) are left alone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.tracking.provenance import git

RESTORED = ("params.yaml", "dvc.lock")


def dvc_error(stderr: str) -> str:
    """What a failed `dvc` command said, in one line: its `ERROR:` line, else its first line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    error = next((line for line in lines if line.startswith("ERROR")), None)
    return error.removeprefix("ERROR: ") if error else (lines[0] if lines else "failed")


def restore(root: Path) -> list[str]:
    """Restore; return what was done, one line each."""
    if not git("rev-parse", "--verify", "--quiet", "HEAD", cwd=root, check=False).strip():
        raise PipelineError(f"{root}: no git commit to restore from")
    committed = [
        name
        for name in RESTORED
        if git("ls-tree", "--name-only", "HEAD", "--", name, cwd=root, check=False).strip()
    ]
    changed = git("diff", "--name-only", "HEAD", "--", *committed, cwd=root, check=False).split()
    done = []
    if changed:
        git("checkout", "HEAD", "--", *changed, cwd=root)
        done.append(f"{', '.join(changed)}: back to the last commit")
    result = subprocess.run(
        ["dvc", "checkout", "--force"], cwd=root, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise PipelineError(
            f"dvc checkout could not restore every output ({dvc_error(result.stderr)}): "
            "what is not in the DVC cache, `dvc pull` fetches or `dvc repro` remakes"
        )
    done.append("outputs: as dvc.lock records them (dvc checkout)")
    return done
