"""The thin stage shells: what they hand to other processes and files."""

import sys

import pytest
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

    def launch(command, workers, params_text):
        with train.workers.params_file(params_text) as (path, _):
            launched.append((command, workers, load_params(path)))

    monkeypatch.setattr(train.workers, "launch", launch)
    train.launch_workers(params, train.DENOISE)
    [(command, workers, seen)] = launched
    assert command == [sys.executable, "-m", "pipeline.stages.train", "denoise"]
    assert workers == 3 and seen == params


WORKER = """
import json, os, pathlib, sys, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
params = pathlib.Path(sys.argv[sys.argv.index("--params") + 1]).read_text()
pathlib.Path(sys.argv[1]).joinpath(f"worker{index}").write_text(params)
if index == 1:
    print("Traceback (most recent call last):\\n  ...", file=sys.stderr)
    print("ValueError: worker one cannot go on", file=sys.stderr)
    sys.exit(3)
time.sleep(600)
"""


def test_a_failing_worker_ends_the_others_and_fails_the_stage_in_one_line(tmp_path):
    """The chief would otherwise wait forever for the failed worker's share of a gradient sum.
    Each worker read the params it was given, from a file that is gone afterwards."""
    import psutil

    from pipeline.core.errors import PipelineError

    def workers():
        return [p for p in psutil.Process().children() if str(tmp_path) in p.cmdline()]

    with pytest.raises(PipelineError) as failed:
        train.workers.launch([sys.executable, "-c", WORKER, str(tmp_path)], 2, "seed: 7\n")
    assert str(failed.value) == (
        "a training worker failed: worker 1 exited with status 3: "
        "ValueError: worker one cannot go on"
    )
    assert [(tmp_path / f"worker{i}").read_text() for i in (0, 1)] == ["seed: 7\n"] * 2
    assert workers() == []


def test_the_worker_params_are_a_faithful_copy():
    params = parse_params(merge(default_params(), {"train_basic": {"learning_rate": 2.5e-4}}))
    assert parse_params(yaml.safe_load(yaml.safe_dump(params.model_dump()))) == params
