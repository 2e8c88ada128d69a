import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.core.files import atomic_path, dvc_md5, file_digest
from pipeline.data.arrays import ArraySpec, load_array, save_arrays
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
