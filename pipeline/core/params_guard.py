"""params.yaml must not change while a pipeline runs on it.

`dvc exp run -S ...` writes its values into params.yaml before it asks for DVC's repository
lock, so a second experiment started in a busy workspace changes the params under the first one
before DVC refuses it. A stage that went on would mix two configurations in one experiment (its
outputs made with the old values, `dvc.lock` recording the new ones) and `register` could crown
a model of an experiment that then fails.

So each stage remembers the params it validated and compares them, at its start, with those the
first stage of the same `dvc repro` / `dvc exp run` saw (`.aepipe/pipeline-runs/<id>.json`) and,
under `dvc exp run`, with those DVC set up for this very experiment (the commit it stashed for it
and runs, `refs/exps/exec/EXEC_MERGE`: a second experiment started at the same moment writes
params.yaml even before the first stage); and again before its results count (`unchanged()`:
before a model is saved or registered, before a run is ended FINISHED). Any difference fails the
stage in one line naming a changed key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.core import paths, processes
from pipeline.core.config import Params, flatten, load_params, read_yaml
from pipeline.core.errors import ParamsError, PipelineError
from pipeline.core.files import write_json_atomic
from pipeline.core.shell import git

SNAPSHOTS_DIR = paths.STATE_DIR / "pipeline-runs"
_remembered: dict[Path, dict[str, Any]] = {}  # params file -> the flat params this process uses


def _difference(before: dict[str, Any], now: dict[str, Any]) -> str | None:
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            return f"{key} was {before.get(key)!r}, now {now.get(key)!r}"
    return None


def _changed(path: Path, difference: str) -> ParamsError:
    return ParamsError(
        f"{path} changed while this pipeline ran ({difference}): another `dvc exp run` in this "
        "workspace? Nothing from this run counts; `aepipe restore`, then run one experiment at a "
        "time here (or queue them: dvc exp run --queue)"
    )


RUNNING_EXPERIMENT = "refs/exps/exec/EXEC_MERGE"  # the commit `dvc exp run` runs


def _set_up_by_dvc() -> dict[str, Any] | None:
    """Under `dvc exp run`: the params of the experiment DVC runs, from the commit it stashed for
    it; None elsewhere. Refuses a running experiment that is another one than this stage's."""
    name = os.environ.get("DVC_EXP_NAME")
    if not name:
        return None
    here = Path.cwd()
    message = git("log", "-1", "--format=%s", RUNNING_EXPERIMENT, cwd=here, check=False).strip()
    parts = message.split(":")
    if len(parts) < 4 or parts[0] != "dvc-exp":
        return None  # not a run DVC set up so (a DVC that records it elsewhere)
    if parts[3] != name:
        raise _changed(
            Path("params.yaml"), f"DVC now runs experiment {parts[3]}, this stage belongs to {name}"
        )
    text = git("show", f"{RUNNING_EXPERIMENT}:params.yaml", cwd=here, check=False)
    try:
        raw = read_yaml(text, "params.yaml")
    except ParamsError:
        return None
    return flatten(raw) if isinstance(raw, dict) else None


def remember(path: Path, params: Params) -> None:
    """Keep the params this stage validated; refuse them if the pipeline run began with others,
    or if they are not those DVC set up for this experiment."""
    flat = params.flat()
    _remembered[Path(path)] = flat
    if Path(path) != Path("params.yaml"):
        return  # a copy made for this process alone (multi-worker training)
    intended = _set_up_by_dvc()
    if intended is not None and (difference := _difference(intended, flat)):
        raise _changed(Path(path), difference)
    run_id = processes.pipeline_run_id()
    snapshot = SNAPSHOTS_DIR / f"{run_id}.json"
    try:
        recorded = json.loads(snapshot.read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if recorded is None:
        _forget_finished_runs()
        identity = processes.process_identity(processes.pipeline_process())
        write_json_atomic(snapshot, {"process": identity, "params": flat})
    elif difference := _difference(recorded, flat):
        raise _changed(Path(path), difference)


def unchanged() -> None:
    """Raise if a params file this stage validated now holds other values."""
    for path, flat in _remembered.items():
        try:
            now = load_params(path).flat()
        except PipelineError as exc:
            raise _changed(path, f"now unreadable: {exc}") from None
        if difference := _difference(flat, now):
            raise _changed(path, difference)


def _forget_finished_runs() -> None:
    """Remove the snapshots of pipeline runs whose process has ended."""
    for snapshot in SNAPSHOTS_DIR.glob("*.json"):
        try:
            gone = processes.process_gone(json.loads(snapshot.read_text())["process"])
        except (OSError, ValueError, KeyError, TypeError):
            gone = True
        if gone:
            snapshot.unlink(missing_ok=True)
