import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline.arrays import save_arrays
from tests.conftest import REPO_ROOT, default_params, merge

PROBE = """
import sys
from pipeline.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("tensorflow", "keras", "mlflow") if m in sys.modules)
print("exit", code, "imported", heavy)
"""


def run_cli(tmp_path, params: dict, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_a_bad_param_stops_training_in_one_line_before_tensorflow_loads(tmp_path):
    bad = merge(default_params(), {"train_basic": {"epochs": -1}})
    result = run_cli(tmp_path, bad, "train", "basic")
    assert result.stderr == (
        "aepipe train: error: params.yaml: train_basic.epochs = -1: "
        "Input should be greater than or equal to 1\n"
    )
    assert result.stdout.strip() == "exit 2 imported []"


def test_a_typo_in_a_key_fails_validate(tmp_path):
    bad = default_params()
    bad["train_basic"]["epoch"] = 5
    result = run_cli(tmp_path, bad, "validate")
    assert "unknown key 'train_basic.epoch'" in result.stderr
    assert result.stdout.startswith("exit 2")


def test_missing_inputs_are_named_before_tensorflow_loads(tmp_path):
    result = run_cli(tmp_path, default_params(), "train", "denoise")
    assert "data/prepared/x_train.npy: missing" in result.stderr
    assert result.stdout.strip() == "exit 2 imported []"


@pytest.fixture
def raw_workspace(tmp_path, mnist):
    save_arrays(tmp_path / "data/raw", mnist)
    return tmp_path


def test_a_truncated_raw_file_is_named_by_prepare(raw_workspace):
    path = raw_workspace / "data/raw/x_train.npy"
    path.write_bytes(path.read_bytes()[:1000])
    result = run_cli(raw_workspace, default_params(), "prepare")
    assert "aepipe prepare: error: data/raw/x_train.npy: unreadable or truncated" in result.stderr
    assert result.stdout.startswith("exit 2")


def test_a_changed_byte_in_raw_data_is_caught_by_its_hash(raw_workspace, mnist):
    changed = mnist["x_test"].copy()
    changed[17, 3, 3] ^= 0xFF
    save_arrays(raw_workspace / "data/raw", {"x_test": changed})
    result = run_cli(raw_workspace, default_params(), "prepare")
    assert "data/raw:x_test: sha256" in result.stderr and "differs from MNIST" in result.stderr


def test_bad_prepared_data_is_named_and_earlier_outputs_survive(raw_workspace):
    params = merge(default_params(), {"data": {"train_size": 100, "test_size": 20}})
    assert "exit 0" in run_cli(raw_workspace, params, "prepare").stdout
    assert "exit 0" in run_cli(raw_workspace, params, "noise").stdout
    noisy_before = (raw_workspace / "data/noisy/x_train.npy").read_bytes()

    prepared = raw_workspace / "data/prepared"
    x_train = np.load(prepared / "x_train.npy")
    x_train[5, 5] = np.nan
    save_arrays(prepared, {"x_train": x_train})
    result = run_cli(raw_workspace, params, "noise")
    assert "data/prepared/x_train.npy: 1 NaN or infinite values" in result.stderr
    assert (raw_workspace / "data/noisy/x_train.npy").read_bytes() == noisy_before

    save_arrays(prepared, {"x_train": np.zeros((100, 784))})  # float64
    result = run_cli(raw_workspace, params, "train", "basic")
    assert "data/prepared/x_train.npy: dtype float64, expected float32" in result.stderr
    assert result.stdout.strip() == "exit 2 imported []"

    save_arrays(prepared, {"x_train": np.zeros((100, 28, 28), np.float32)})
    result = run_cli(raw_workspace, params, "train", "basic")
    assert "data/prepared/x_train.npy: shape (100, 28, 28), expected (N, 784)" in result.stderr

    save_arrays(prepared, {"x_train": np.zeros((100, 784), np.float32)})
    save_arrays(raw_workspace / "data/noisy", {"x_test": np.full((20, 784), 2.0, np.float32)})
    result = run_cli(raw_workspace, params, "train", "denoise")
    assert (
        "data/noisy/x_test.npy: values span [2.0, 2.0], expected within [0.0, 1.0]" in result.stderr
    )
