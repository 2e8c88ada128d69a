"""File helpers: atomic writes and hashes computed exactly as DVC computes them."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it over `path` only if the block succeeds.

    A crash or Ctrl-C mid-write leaves the old file (or no file), never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: object) -> None:
    """Strict JSON: a NaN or infinity is a bug to surface here, not a file others choke on."""
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False)
    write_text_atomic(path, text + "\n")


def write_csv_atomic(path: str | Path, rows: list[dict]) -> None:
    """A header from the first row's keys, then one line per row (floats written exactly)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_md5(path: str | Path) -> str:
    """The md5 DVC records for a file or directory (`<md5>.dir` for directories), leaving out
    what the repository's `.dvcignore` leaves out (Python's `__pycache__/` in code deps)."""
    path = Path(path)
    if not path.is_dir():
        return file_digest(path)
    ignored = _dvcignored(path)
    entries = sorted(
        (
            {"md5": file_digest(file), "relpath": file.relative_to(path).as_posix()}
            for file in path.rglob("*")
            if file.is_file() and not ignored(file)
        ),
        key=lambda entry: entry["relpath"],
    )
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir"


def _dvcignored(path: Path) -> Callable[[Path], bool]:
    """Whether DVC ignores a file under `path`, by the `.dvcignore` at the root of the DVC
    repository holding it (gitignore rules); nothing is ignored outside a DVC repository. Paths
    are taken as they are inside the repository, symbolic links not followed."""
    path = path.absolute()
    root = next((d for d in (path, *path.parents) if (d / ".dvc").is_dir()), None)
    patterns = root / ".dvcignore" if root else None
    if patterns is None or not patterns.is_file():
        return lambda file: False
    import pathspec

    spec = pathspec.GitIgnoreSpec.from_lines(patterns.read_text().splitlines())
    base = patterns.parent
    return lambda file: spec.match_file(file.absolute().relative_to(base).as_posix())
