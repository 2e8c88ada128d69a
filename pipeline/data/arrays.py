"""Arrays on disk: one `.npy` per array (byte-stable, unlike zipped `.npz`), checked on load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.files import atomic_path


@dataclass(frozen=True)
class ArraySpec:
    """What a stage expects of an array it reads. `None` in `shape` means any length."""

    dtype: str
    shape: tuple[int | None, ...]
    value_range: tuple[float, float] | None = None


def save_arrays(directory: str | Path, arrays: dict[str, np.ndarray]) -> None:
    directory = Path(directory)
    for name, array in arrays.items():
        with atomic_path(directory / f"{name}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def load_array(path: str | Path, spec: ArraySpec) -> np.ndarray:
    """Load `path` and check it against `spec`; any problem raises a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (run the stage that writes it: `dvc repro`)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable or truncated .npy file ({exc})") from None
    check_array(array, spec, str(path))
    return array


def check_array(array: np.ndarray, spec: ArraySpec, name: str) -> None:
    if array.dtype != np.dtype(spec.dtype):
        raise DataError(f"{name}: dtype {array.dtype}, expected {spec.dtype}")
    shape_ok = array.ndim == len(spec.shape) and all(
        want is None or have == want for have, want in zip(array.shape, spec.shape, strict=True)
    )
    if not shape_ok:
        wanted = "(" + ", ".join("N" if d is None else str(d) for d in spec.shape) + ")"
        raise DataError(f"{name}: shape {array.shape}, expected {wanted}")
    if spec.value_range is None or array.size == 0:
        return
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise DataError(f"{name}: {bad} NaN or infinite values")
    low, high = spec.value_range
    lowest, highest = array.min(), array.max()
    if lowest < low or highest > high:
        raise DataError(
            f"{name}: values span [{lowest}, {highest}], expected within [{low}, {high}]"
        )
