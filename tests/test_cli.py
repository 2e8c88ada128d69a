import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from pipeline.data.arrays import save_arrays
from pipeline.data.images import RAW_SPECS
from tests.conftest import REPO_ROOT, default_params, merge

# Runs `aepipe <args>`, or with `--stage`, `python -m pipeline.stages.<args>` as DVC does; then
# says which heavy libraries the process had imported by the time it ended.
PROBE = """
import runpy, sys
if sys.argv[1] == "--stage":
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    try:
        runpy.run_module("pipeline.stages." + sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code
else:
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


@pytest.mark.parametrize("how", [(), ("--stage",)], ids=["aepipe", "dvc's command"])
def test_a_bad_param_stops_training_in_one_line_before_tensorflow_loads(tmp_path, how):
    bad = merge(default_params(), {"train_basic": {"epochs": -1}})
    result = run_cli(tmp_path, bad, *how, "train", "basic")
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


@pytest.mark.parametrize("how", [(), ("--stage",)], ids=["aepipe", "dvc's command"])
def test_missing_inputs_are_named_before_tensorflow_loads(tmp_path, how):
    for stage in (("train", "denoise"), ("evaluate",)):
        result = run_cli(tmp_path, default_params(), *how, *stage)
        assert "data/prepared/x_train.npy: missing" in result.stderr
        assert result.stdout.strip() == "exit 2 imported []"


@pytest.fixture
def raw_workspace(tmp_path):
    """data/raw with MNIST's names, shapes and dtypes (not its values: no download here)."""
    rng = np.random.default_rng(0)
    save_arrays(
        tmp_path / "data/raw",
        {
            name: rng.integers(0, 10 if name.startswith("y") else 256, spec.shape).astype(
                spec.dtype
            )
            for name, spec in RAW_SPECS.items()
        },
    )
    return tmp_path


def test_a_truncated_raw_file_is_named_by_prepare(raw_workspace):
    path = raw_workspace / "data/raw/x_train.npy"
    path.write_bytes(path.read_bytes()[:1000])
    result = run_cli(raw_workspace, default_params(), "prepare")
    assert "aepipe prepare: error: data/raw/x_train.npy: header claims shape (60000, 28, 28)" in (
        result.stderr
    )
    assert "(truncated or corrupted)" in result.stderr
    assert result.stdout.startswith("exit 2")


def test_raw_data_that_is_not_mnist_is_caught_by_its_hash(raw_workspace):
    result = run_cli(raw_workspace, default_params(), "prepare")
    assert "data/raw:x_train: sha256" in result.stderr and "differs from MNIST" in result.stderr
    assert result.stdout.startswith("exit 2")


def prepared_workspace(tmp_path):
    """data/prepared of 100 training and 20 test images; returns params that fit them."""
    images = np.random.default_rng(1).random((130, 784)).astype(np.float32)
    labels = np.arange(130, dtype=np.uint8) % 10
    save_arrays(
        tmp_path / "data/prepared",
        {
            "x_train": images[:100],
            "y_train": labels[:100],
            "x_test": images[100:120],
            "y_test": labels[100:120],
            "x_tuning": images[120:],
        },
    )
    return merge(default_params(), {"data": {"train_size": 100, "test_size": 20}})


def test_bad_prepared_data_is_named_and_earlier_outputs_survive(tmp_path):
    params = prepared_workspace(tmp_path)
    raw_workspace = tmp_path
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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_a_closed_terminal_end_a_command_as_interrupted(signum, capsys):
    """As Ctrl-C: the command's cleanup runs (MLflow runs end KILLED), exit status 130."""
    from pipeline.core.entry import run_command

    cleaned = []

    def command():
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the signal arrives first
        finally:
            cleaned.append(True)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        assert run_command("train", command) == 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert cleaned == [True]
    assert capsys.readouterr().err == "aepipe train: interrupted\n"


def test_an_interrupt_during_a_store_write_waits_for_the_write_to_end():
    from pipeline.core import interrupts

    previous = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    written = []
    try:
        interrupts.install()
        with pytest.raises(KeyboardInterrupt), interrupts.held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            written.append("the whole write")  # not cut off by the signal
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)  # outside a held block: at once
        with pytest.raises(KeyboardInterrupt), interrupts.held():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C does not wait
            time.sleep(5)
            written.append("cut off")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert written == ["the whole write"]


@pytest.mark.parametrize(
    ("occupied", "stage", "named"),
    [
        (".aepipe", "validate", ".aepipe/"),  # a file where a directory goes
        ("data/noisy", "noise", "data/noisy"),
    ],
)
def test_a_path_the_project_writes_that_is_occupied_is_one_line(tmp_path, occupied, stage, named):
    params = prepared_workspace(tmp_path)
    (tmp_path / occupied).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / occupied).write_text("in the way")
    result = run_cli(tmp_path, params, "--stage", stage)
    assert result.stderr.startswith(f"aepipe {stage}: error: {named}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout.strip().startswith("exit 2")


def test_every_command_explains_itself():
    """Help texts are %-formatted by argparse: a bare "95%" in one crashed `aepipe --help`."""
    from pipeline.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for argv in (["--help"], *([name, "--help"] for name in commands)):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(argv)
        assert exited.value.code == 0, argv


def test_a_stage_keeps_its_temporary_files_to_itself_and_removes_them(tmp_path):
    """TensorFlow writes generated code to the temporary directory, which a SIGKILL leaves
    behind: each stage has its own, removed when it ends, and a killed stage's by the next."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    import psutil

    started = psutil.Process(dead.pid).create_time()
    dead.wait()
    leftover = tmp_path / ".aepipe" / "tmp" / f"{dead.pid}-{started:.3f}"
    (leftover / "__autograph_generated_file1.py").parent.mkdir(parents=True)
    (leftover / "__autograph_generated_file1.py").write_text("x = 1\n")
    result = run_cli(tmp_path, default_params(), "--stage", "validate")
    assert result.stdout.strip().startswith("validate: params valid")
    assert list((tmp_path / ".aepipe" / "tmp").iterdir()) == []
