"""Arrays on disk: one `.npy` per array (byte-stable, unlike zipped `.npz`), checked on load.

A file is judged by its header before anything is allocated or decompressed: the dtype and shape
must be those expected, and the bytes that follow must be exactly as many as the header claims.
So a file claiming 10^12 elements, a zip member that is not an array, or a deflate bomb is
refused in one line instead of eating memory.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.files import atomic_path

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


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
        with open(path, "rb") as handle:
            array = read_array(handle, path.stat().st_size, str(path), spec)
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({exc.strerror})") from None
    check_array(array, spec, str(path))
    return array


def read_array(handle: IO[bytes], size: int, name: str, spec: ArraySpec | None) -> np.ndarray:
    """The `.npy` array in `handle` (`size` bytes long), refused before it is read if its header
    does not match `spec` (None: any plain numeric array) or the bytes that follow."""
    try:
        reader = _HEADER_READERS[np.lib.format.read_magic(handle)]
        shape, fortran_order, dtype = reader(handle)
    except (ValueError, KeyError, EOFError, SyntaxError) as exc:
        raise DataError(f"{name}: not a .npy array file ({exc})") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise DataError(f"{name}: dtype {dtype}, expected numbers")
    if spec is not None:
        _check_type(dtype, shape, spec, name)
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    present = size - handle.tell()
    if claimed != present:
        raise DataError(
            f"{name}: header claims shape {shape} ({claimed:,} bytes) but {present:,} bytes "
            "follow (truncated or corrupted)"
        )
    raw = np.empty(claimed, np.uint8)
    view, filled = raw.data, 0
    readinto = cast(io.BufferedIOBase, handle).readinto  # every binary file object has it
    while filled < claimed and (got := readinto(view[filled:])):
        filled += got
    if filled != claimed:
        raise DataError(f"{name}: truncated ({filled:,} of {claimed:,} bytes)")
    if fortran_order:
        return raw.view(dtype).reshape(shape, order="F").copy(order="C")
    return raw.view(dtype).reshape(shape)


def read_npz(
    path: str | Path, specs: Mapping[str, ArraySpec] | None, max_bytes: int
) -> dict[str, np.ndarray]:
    """The arrays of a `.npz` archive. With `specs`, exactly those names and types; without, any
    plain numeric arrays. Each member's declared size is checked (against its header, and all
    against `max_bytes`) before it is decompressed."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {m.filename.removesuffix(".npy"): m for m in archive.infolist()}
            strangers = [m.filename for m in archive.infolist() if not m.filename.endswith(".npy")]
            if strangers:
                raise DataError(f"{path}: holds {strangers[0]!r}, not an array (.npy)")
            if specs is not None and set(members) != set(specs):
                raise DataError(f"{path}: holds arrays {sorted(members)}, expected {sorted(specs)}")
            declared = sum(m.file_size for m in members.values())
            if declared > max_bytes:
                raise DataError(
                    f"{path}: its arrays would take {declared:,} bytes unpacked, more than "
                    f"{max_bytes:,} (not what this file should hold)"
                )
            arrays = {}
            for name, member in members.items():
                with archive.open(member) as handle:
                    spec = specs[name] if specs is not None else None
                    arrays[name] = read_array(handle, member.file_size, f"{path}:{name}", spec)
            return arrays
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _check_type(dtype: np.dtype, shape: tuple[int, ...], spec: ArraySpec, name: str) -> None:
    if dtype != np.dtype(spec.dtype):
        raise DataError(f"{name}: dtype {dtype}, expected {spec.dtype}")
    shape_ok = len(shape) == len(spec.shape) and all(
        want is None or have == want for have, want in zip(shape, spec.shape, strict=True)
    )
    if not shape_ok:
        wanted = "(" + ", ".join("N" if d is None else str(d) for d in spec.shape) + ")"
        raise DataError(f"{name}: shape {shape}, expected {wanted}")


def check_array(array: np.ndarray, spec: ArraySpec, name: str) -> None:
    _check_type(array.dtype, array.shape, spec, name)
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
