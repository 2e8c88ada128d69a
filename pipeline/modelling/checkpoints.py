"""Per-epoch training checkpoints, so a killed training stage resumes where it stopped.

They live under `.aepipe/checkpoints/<stage>/`, outside the stage's DVC outputs (DVC deletes
those before rerunning a stage). A checkpoint is only resumed by a run with the same
fingerprint (params, input hashes, code), and removed once the stage has written its outputs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts.history import HistoryRow
from pipeline.core.errors import DataError
from pipeline.core.files import atomic_path, write_json_atomic
from pipeline.data.arrays import read_npz

# Weights and optimizer state of the largest model the params allow are far below this.
MAX_STATE_BYTES = 1 << 30


@dataclass(frozen=True)
class Resumed:
    rows: list[HistoryRow]  # history of the completed epochs
    state: list[np.ndarray]  # model weights then optimizer variables
    run_id: str  # the MLflow run of the interrupted attempt


def fingerprint(*parts: Any) -> str:
    """A digest of everything that must be equal for a checkpoint to be resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def code_digest(package_dir: Path) -> str:
    digest = hashlib.sha256()
    for source in sorted(package_dir.rglob("*.py")):
        digest.update(source.relative_to(package_dir).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


class CheckpointDir:
    def __init__(self, directory: Path, key: str):
        self.directory = directory
        self.key = key
        self.state_file = directory / "state.json"

    def load(self) -> Resumed | None:
        """The last completed epoch of an interrupted run with the same key, if any."""
        try:
            state = json.loads(self.state_file.read_text())
            if state["key"] != self.key:
                return None
            arrays_file = self.directory / Path(state["arrays"]).name  # never elsewhere
            saved = read_npz(arrays_file, None, max_bytes=MAX_STATE_BYTES)
            arrays = [saved[f"a{i}"] for i in range(len(saved))]
            rows = [(int(e), float(loss), float(val)) for e, loss, val in state["rows"]]
            if [row[0] for row in rows] != list(range(1, len(rows) + 1)) or not rows:
                return None  # epochs 1..k, or it is not a state this code saved
            return Resumed(rows, arrays, str(state["run_id"]))
        except (OSError, ValueError, KeyError, TypeError, DataError):
            return None  # none, or unreadable: start afresh rather than resume garbage

    def save(self, rows: list[HistoryRow], arrays: list[np.ndarray], run_id: str) -> None:
        """Arrays first, then the state file naming them: a crash between leaves the old pair."""
        arrays_name = f"epoch-{rows[-1][0]}.npz"
        with atomic_path(self.directory / arrays_name) as tmp, open(tmp, "wb") as handle:
            named: dict[str, Any] = {f"a{i}": array for i, array in enumerate(arrays)}
            np.savez(handle, **named)
        try:
            write_json_atomic(
                self.state_file,
                {"key": self.key, "arrays": arrays_name, "rows": rows, "run_id": run_id},
            )
        except BaseException:  # the old pair stays; the arrays no state file names go
            (self.directory / arrays_name).unlink(missing_ok=True)
            raise
        for old in self.directory.glob("epoch-*.npz"):
            if old.name != arrays_name:
                old.unlink()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
