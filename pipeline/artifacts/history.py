"""The training history: one CSV row per epoch, `epoch,loss,val_loss`, written by the training
stages and read by `evaluate` for the loss curves."""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.core.errors import DataError
from pipeline.core.files import write_csv_atomic

HISTORY_COLUMNS = ("epoch", "loss", "val_loss")
HistoryRow = tuple[int, float, float]


def write_history(path: str | Path, rows: list[HistoryRow]) -> None:
    write_csv_atomic(path, [dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in rows])


def read_history(path: str | Path) -> list[HistoryRow]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (run the training stage: `dvc repro`)")
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != HISTORY_COLUMNS:
            raise DataError(f"{path}: header {header}, expected {HISTORY_COLUMNS}")
        try:
            return [(int(epoch), float(loss), float(val)) for epoch, loss, val in reader]
        except ValueError as exc:
            raise DataError(f"{path}: malformed row ({exc})") from None
