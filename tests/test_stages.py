"""The thin stage shells: what they hand to other processes and files."""

import sys
from pathlib import Path

import yaml

from pipeline.core.config import load_params, parse_params
from pipeline.stages import train
from tests.conftest import default_params, merge


def test_multi_worker_training_relaunches_the_stage_with_its_own_arguments(monkeypatch):
    """Not `sys.argv`: the stage may have been started through `aepipe --params other.yaml`, or
    from Python, and every worker must run the same stage on the same params."""
    params = parse_params(
        merge(default_params(), {"distribute": {"strategy": "multi_worker", "workers": 3}})
    )
    monkeypatch.setattr(sys, "argv", ["aepipe", "--params", "elsewhere.yaml", "fetch"])
    launched = []

    def launch(command, workers):
        params_file = Path(command[command.index("--params") + 1])
        launched.append((command, workers, load_params(params_file)))
        return 0

    monkeypatch.setattr(train.workers, "launch", launch)
    train.launch_workers(params, train.DENOISE)
    [(command, workers, seen)] = launched
    assert command[:3] == [sys.executable, "-m", "pipeline.stages.train"]
    assert command[-1] == "denoise" and workers == 3
    assert seen == params
    assert not Path(command[command.index("--params") + 1]).exists()  # removed afterwards


def test_the_worker_params_are_a_faithful_copy():
    params = parse_params(merge(default_params(), {"train_basic": {"learning_rate": 2.5e-4}}))
    assert parse_params(yaml.safe_load(yaml.safe_dump(params.model_dump()))) == params
