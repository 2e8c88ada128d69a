"""`aepipe replicate`: one configuration queued over several training seeds, as ordinary DVC
experiments with readable names (`<name>-seed<N>`), each checked against the schema first."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pipeline.core import interrupts
from pipeline.core.config import parse_params, read_yaml
from pipeline.core.errors import ParamsError, PipelineError, one_line
from pipeline.ops.workspace import dvc_error

NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def overridden(params_file: Path, assignments: list[str]) -> dict[str, Any]:
    """The params `dvc exp run -S <assignment> ...` would run with: DVC's own code applies each
    assignment to a copy of `params_file` (so what is checked is what DVC then runs: its
    grammar, its types: `1e3` is a float there, `+key=v` adds a key)."""
    from dvc.utils.hydra import apply_overrides, get_hydra_sweeps

    with tempfile.TemporaryDirectory(prefix="aepipe-params-") as scratch:
        copy = Path(scratch) / "params.yaml"
        shutil.copyfile(params_file, copy)
        for assignment in assignments:
            key = assignment.partition("=")[0].lstrip("+~")
            if key == "seed":
                raise ParamsError("-S seed=...: the seeds are given with --seeds")
            if len(get_hydra_sweeps({"params.yaml": [assignment]})) > 1:
                raise ParamsError(
                    f"-S {assignment}: a list of values is a sweep; give one value here "
                    "(aepipe sweep runs every combination)"
                )
            try:
                apply_overrides(copy, [assignment])
            except Exception as exc:  # DVC's wrapper of Hydra's parse and merge errors
                cause = exc.__cause__ or exc
                raise ParamsError(f"-S {assignment}: {one_line(cause)}") from None
        return read_yaml(copy.read_text(encoding="utf-8"), "params.yaml")


def experiment_names(prefix: str, seeds: list[int]) -> list[str]:
    return [f"{prefix}-seed{seed}" for seed in seeds]


def default_prefix(assignments: list[str]) -> str:
    text = "_".join(assignments) or "defaults"
    name = NAME_CHARS.sub("-", text.replace("=", "-")).replace("..", "-").strip("-.")[:60]
    return name.rstrip("-.") or "defaults"


def existing_names(root: Path) -> set[str]:
    """Names of the DVC experiments of this repository, and of those queued."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        cwd=root, capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    names = {ref.rsplit("/", 1)[-1] for ref in refs}
    status = subprocess.run(
        ["dvc", "queue", "status"], cwd=root, capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return names | {line.split()[1] for line in status[1:] if len(line.split()) > 2}


def queue_replicates(
    root: Path, seeds: list[int], assignments: list[str], prefix: str | None
) -> list[str]:
    """Check every seed's params, then queue one experiment per seed; return their names."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ParamsError("--seeds: give distinct seeds, e.g. --seeds 0 1 2")
    prefix = prefix or default_prefix(assignments)
    if NAME_CHARS.search(prefix) or prefix.startswith(("-", ".")) or ".." in prefix:
        raise ParamsError(f"--name {prefix}: use letters, digits, '.', '_' and '-' only")
    params = overridden(root / "params.yaml", assignments)
    for seed in seeds:
        parse_params({**params, "seed": seed}, f"-S seed={seed}")
    names = experiment_names(prefix, seeds)
    taken = sorted(set(names) & existing_names(root))
    if taken:
        raise ParamsError(f"experiments {', '.join(taken)} exist or are queued; choose --name")
    queued: list[str] = []
    try:
        for seed, name in zip(seeds, names, strict=True):
            command = ["dvc", "exp", "run", "--queue", "--name", name, "-S", f"seed={seed}"]
            command += [part for assignment in assignments for part in ("-S", assignment)]
            queued.append(name)  # before it runs: a Ctrl-C meanwhile may or may not queue it
            result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise PipelineError(
                    f"dvc exp run --queue --name {name}: {dvc_error(result.stderr)}; nothing queued"
                )
    except BaseException:  # all or nothing: take back what this call queued
        with interrupts.held():
            for name in queued:
                subprocess.run(["dvc", "queue", "remove", name], cwd=root, capture_output=True)
        raise
    return names
