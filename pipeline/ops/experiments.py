"""`aepipe replicate`: one configuration queued over several training seeds, as ordinary DVC
experiments with readable names (`<name>-seed<N>`), each checked against the schema first."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

from pipeline.core.config import parse_params, read_yaml
from pipeline.core.errors import ParamsError, PipelineError
from pipeline.ops.workspace import dvc_error

NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def overridden(raw: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """`raw` params with `key=value` assignments applied (values read as YAML, as DVC's `-S`)."""
    result = copy.deepcopy(raw)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise ParamsError(f"-S {assignment}: expected key=value")
        if key == "seed":
            raise ParamsError("-S seed=...: the seeds are given with --seeds")
        *sections, last = key.split(".")
        node = result
        for section in sections:
            if not isinstance(node.get(section), dict):
                raise ParamsError(f"-S {assignment}: params.yaml has no section {section!r}")
            node = node[section]
        if last not in node:
            raise ParamsError(f"-S {assignment}: params.yaml has no key {key!r}")
        node[last] = read_yaml(text, f"-S {assignment}") if text else None
    return result


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
    raw = read_yaml((root / "params.yaml").read_text(encoding="utf-8"), "params.yaml")
    params = overridden(raw, assignments)
    for seed in seeds:
        parse_params({**params, "seed": seed}, f"-S seed={seed}")
    names = experiment_names(prefix, seeds)
    taken = sorted(set(names) & existing_names(root))
    if taken:
        raise ParamsError(f"experiments {', '.join(taken)} exist or are queued; choose --name")
    queued: list[str] = []
    for seed, name in zip(seeds, names, strict=True):
        command = ["dvc", "exp", "run", "--queue", "--name", name, "-S", f"seed={seed}"]
        command += [part for assignment in assignments for part in ("-S", assignment)]
        result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            if queued:  # all or nothing: take back what this call queued
                subprocess.run(["dvc", "queue", "remove", *queued], cwd=root, capture_output=True)
            raise PipelineError(
                f"dvc exp run --queue --name {name}: {dvc_error(result.stderr)}; nothing queued"
            )
        queued.append(name)
    return names
