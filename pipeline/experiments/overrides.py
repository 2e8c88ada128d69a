"""`-S key=value` as DVC applies it. A wrapper that checks what DVC then runs must read the values
with DVC's own code: its grammar (Hydra's), its types (`1e3` is a float there, `+key=v` adds a
key, `~key` removes one) and its sweeps (`key=a,b` is two experiments when queued).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.core.config import Params, parse_params, read_yaml
from pipeline.core.errors import ParamsError, one_line

NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
PARAMS_FILE = "params.yaml"


def check_name(name: str, option: str = "--name") -> None:
    """Experiment names become git refs and MLflow names: a safe alphabet only."""
    if not name or NAME_CHARS.search(name) or name.startswith(("-", ".")) or ".." in name:
        raise ParamsError(f"{option} {name}: use letters, digits, '.', '_' and '-' only")


def overrides(assignments: list[str]) -> list[str]:
    """The `-S` values as overrides of params.yaml, as DVC groups them (`params.yaml:key=v` is
    `key=v`); a value for another file is refused: every param of this pipeline is in
    params.yaml."""
    from dvc.utils.cli_parse import to_path_overrides

    grouped = to_path_overrides(assignments)
    other = sorted(set(grouped) - {PARAMS_FILE})
    if other:
        raise ParamsError(
            f"-S {other[0]}:{grouped[other[0]][0]}: this pipeline's params are all in "
            f"{PARAMS_FILE} (give key=value, or {PARAMS_FILE}:key=value)"
        )
    return grouped.get(PARAMS_FILE, [])


def _one_line_of(exc: Exception) -> str:
    return one_line(exc.__cause__ or exc)  # DVC wraps Hydra's parse and merge errors


def settings(assignments: list[str]) -> list[list[str]]:
    """Every combination of the `-S` lists (`key=v1,v2`), each as the single overrides DVC would
    queue, in DVC's order; `[[]]` for no assignment."""
    from dvc.utils.hydra import get_hydra_sweeps

    parsed = overrides(assignments)
    if not parsed:
        return [[]]
    try:
        combinations = get_hydra_sweeps({PARAMS_FILE: parsed})
    except Exception as exc:
        raise ParamsError(f"-S {' '.join(assignments)}: {_one_line_of(exc)}") from None
    return [list(combination[PARAMS_FILE]) for combination in combinations]


def overridden(params_file: Path, assignments: list[str]) -> dict[str, Any]:
    """The params `dvc exp run -S <assignment> ...` would run with: DVC's own code applies each
    assignment to a copy of `params_file`."""
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory(prefix="aepipe-params-") as scratch:
        copy = Path(scratch) / PARAMS_FILE
        shutil.copyfile(params_file, copy)
        for override in overrides(assignments):
            if override.partition("=")[0].lstrip("+~") == "seed":
                raise ParamsError("-S seed=...: the seeds are given with --seeds")
            if len(settings([override])) > 1:
                raise ParamsError(
                    f"-S {override}: a list of values is a sweep; give one value here "
                    "(aepipe sweep runs every combination)"
                )
            try:
                apply_overrides(copy, [override])
            except Exception as exc:
                raise ParamsError(f"-S {override}: {_one_line_of(exc)}") from None
        return read_yaml(copy.read_text(encoding="utf-8"), PARAMS_FILE)


def validated(params_file: Path, assignments: list[str], seed: int, experiment: str) -> Params:
    """The params of one experiment (`assignments` and `seed=seed` applied as DVC applies
    them), validated; a refusal names the experiment."""
    raw = overridden(params_file, assignments)
    return parse_params({**raw, "seed": seed}, experiment)
