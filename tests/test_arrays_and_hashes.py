import io
import tracemalloc
import zipfile

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.core.files import atomic_path, dvc_md5, file_digest
from pipeline.data.arrays import ArraySpec, load_array, read_npz, save_arrays
from tests.conftest import error_message

SPEC = ArraySpec("float32", (None, 4), (0.0, 1.0))


def saved(tmp_path, array, name="a"):
    save_arrays(tmp_path, {name: array})
    return tmp_path / f"{name}.npy"


def test_round_trip_and_identical_bytes(tmp_path):
    array = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    first = saved(tmp_path / "one", array)
    second = saved(tmp_path / "two", array.copy())
    np.testing.assert_array_equal(load_array(first, SPEC), array)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 4), np.float64), "dtype float64, expected float32"),
        (np.zeros((3, 5), np.float32), "shape (3, 5), expected (N, 4)"),
        (np.full((2, 4), np.nan, np.float32), "8 NaN or infinite values"),
        (np.full((2, 4), 1.5, np.float32), "values span [1.5, 1.5], expected within [0.0, 1.0]"),
    ],
)
def test_bad_arrays_are_named(tmp_path, array, message):
    path = saved(tmp_path, array)
    with pytest.raises(DataError) as caught:
        load_array(path, SPEC)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_truncated_and_missing_files(tmp_path):
    path = saved(tmp_path, np.zeros((100, 4), np.float32))
    path.write_bytes(path.read_bytes()[:-50])
    assert "truncated" in error_message(DataError, load_array, path, SPEC)
    assert "missing" in error_message(DataError, load_array, tmp_path / "nope.npy", SPEC)


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert list(tmp_path.iterdir()) == [target]


def test_dvc_md5_matches_dvc_itself(tmp_path):
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    directory = tmp_path / "d"
    (directory / "sub").mkdir(parents=True)
    (directory / "b.bin").write_bytes(b"\x00\x01" * 1000)
    (directory / "a.txt").write_text("line\r\nline\n")
    (directory / "sub" / "c.npy").write_bytes(b"xyz")
    fs = LocalFileSystem()
    odb = HashFileDB(fs, str(tmp_path / "odb"))
    _, _, tree = build(odb, str(directory), fs, "md5")
    assert dvc_md5(directory) == tree.hash_info.value
    assert dvc_md5(directory / "a.txt") == file_digest(directory / "a.txt")


def test_dvc_md5_leaves_out_what_dvcignore_leaves_out(tmp_path):
    """Code deps are directories that Python writes `__pycache__/` into; DVC ignores it."""
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB

    repo = Repo.init(str(tmp_path), no_scm=True)
    (tmp_path / ".dvcignore").write_text("# bytecode\n__pycache__/\n*.pyc\n")
    code = tmp_path / "pipeline" / "modelling"
    (code / "__pycache__").mkdir(parents=True)
    (code / "training.py").write_text("LOOP = 1\n")
    (code / "__pycache__" / "training.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (code / "stale.pyc").write_bytes(b"\x01")
    repo = Repo(str(tmp_path))  # reads the new .dvcignore
    odb = HashFileDB(repo.fs, str(tmp_path / "odb"))
    _, _, tree = build(odb, str(code), repo.fs, "md5", ignore=repo.dvcignore)
    assert dvc_md5(code) == tree.hash_info.value
    outside = tmp_path.parent / f"{tmp_path.name}-outside.py"
    outside.write_text("X = 1\n")
    (code / "linked.py").symlink_to(outside)  # a code file kept elsewhere
    assert dvc_md5(code) != tree.hash_info.value  # hashed through the link, not a crash


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype.hasobject)
    return buffer.getvalue()


def test_a_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as handle:  # a valid header claiming 4 TB, then 64 bytes
        header = {"descr": "<f4", "fortran_order": False, "shape": (1275510204, 784)}
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 64)
    tracemalloc.start()
    try:
        message = error_message(DataError, load_array, path, ArraySpec("float32", (None, 784)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "header claims shape (1275510204, 784)" in message and "64 bytes follow" in message
    assert peak < 1_000_000


def test_npz_members_are_checked_before_they_are_unpacked(tmp_path):
    specs = {"x": ArraySpec("uint8", (10_000, 784))}
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy_bytes(np.zeros((10_000, 784), np.uint8)))  # 7.8 MB of 0
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    try:
        message = error_message(DataError, read_npz, bomb, specs, 1_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "would take 7,840,128 bytes unpacked, more than 1,000,000" in message
    assert peak < 1_000_000
    assert read_npz(bomb, specs, 10_000_000)["x"].shape == (10_000, 784)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ({"x.npy": b"not an array at all"}, "x: not a .npy array file"),
        ({"x.npy": npy_bytes(np.zeros(3, np.uint8)), "run.sh": b"rm -rf /"}, "holds 'run.sh'"),
        ({"y.npy": npy_bytes(np.zeros((2, 784), np.uint8))}, "holds arrays ['y'], expected ['x']"),
        ({"x.npy": npy_bytes(np.array(["a"], object))}, "dtype object, expected numbers"),
        ({"x.npy": npy_bytes(np.zeros((2, 784), np.float64))}, "dtype float64, expected uint8"),
        ({"x.npy": npy_bytes(np.zeros((2, 784), np.uint8))[:-10]}, "(truncated or corrupted)"),
    ],
    ids=["garbage", "stranger", "wrong name", "objects", "wrong dtype", "short"],
)
def test_hostile_npz_files_are_refused_in_one_line(tmp_path, members, expected):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    message = error_message(
        DataError, read_npz, path, {"x": ArraySpec("uint8", (None, 784))}, 10**8
    )
    assert expected in message and "\n" not in message


def test_npz_round_trips_every_shape_and_order(tmp_path):
    arrays = {
        "scalar": np.array(7, np.int64),
        "vector": np.arange(5, dtype=np.float32),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "empty": np.zeros((0, 784), np.float32),
    }
    np.savez(tmp_path / "a.npz", **arrays)
    loaded = read_npz(tmp_path / "a.npz", None, 10**6)
    for name, array in arrays.items():
        assert loaded[name].shape == array.shape and loaded[name].dtype == array.dtype, name
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].flags["C_CONTIGUOUS"] and loaded[name].flags["WRITEABLE"]
