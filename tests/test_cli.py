import subprocess
import sys

import yaml

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
