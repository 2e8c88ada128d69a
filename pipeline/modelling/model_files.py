"""Saving and loading `.keras` files: atomically, byte-reproducibly, in Keras safe mode."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import keras

import pipeline.modelling.architectures  # noqa: F401 (registers the custom layers that saved models use)
from pipeline.artifacts.keras_archive import canonical_keras_bytes
from pipeline.core.errors import DataError
from pipeline.core.files import write_bytes_atomic


def save_model(model: keras.Model, path: str | Path) -> None:
    """Save atomically with canonical bytes: same weights, same file, same md5."""
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "model.keras"
        model.save(raw)
        write_bytes_atomic(path, canonical_keras_bytes(raw.read_bytes()))


def load_model(path: str | Path, compile: bool = True) -> keras.Model:
    """Load with Keras safe mode (no arbitrary code from the archive)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (run the stage that writes it: `dvc repro`)")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a Keras archive (truncated or corrupted); rerun its stage")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # Keras raises many kinds on a corrupted archive
        raise DataError(
            f"{path}: not a loadable Keras model ({type(exc).__name__}: {exc})"
        ) from None
