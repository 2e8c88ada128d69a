import os

import pytest
import yaml

from pipeline.core.config import load_params, parse_params
from pipeline.core.errors import ParamsError
from tests.conftest import REPO_ROOT, default_params, error_message, merge


def error_for(override: dict) -> str:
    with pytest.raises(ParamsError) as caught:
        parse_params(merge(default_params(), override))
    return str(caught.value)


def test_committed_params_are_valid():
    params = load_params("params.yaml")
    assert params.train_basic.epochs == 10
    assert params.flat()["train_denoise.init_from"] == "basic"


def test_unknown_key_is_named_with_the_allowed_ones():
    raw = default_params()
    raw["train_basic"]["epoch"] = 5
    message = error_message(ParamsError, parse_params, raw)
    assert "unknown key 'train_basic.epoch'" in message
    assert "epochs, batch_size, learning_rate" in message


def test_missing_key_is_named():
    raw = default_params()
    del raw["noise"]["seed"]
    assert "missing required key 'noise.seed'" in error_message(ParamsError, parse_params, raw)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            {"train_basic": {"epochs": 0}},
            "train_basic.epochs = 0: Input should be greater than or equal to 1",
        ),
        (
            {"train_basic": {"epochs": "ten"}},
            "train_basic.epochs = 'ten': Input should be a valid integer",
        ),
        ({"train_basic": {"epochs": 2.5}}, "train_basic.epochs = 2.5"),
        ({"train_basic": {"epochs": True}}, "train_basic.epochs = True"),
        (
            {"noise": {"factor": -0.1}},
            "noise.factor = -0.1: Input should be greater than 0",
        ),
        ({"noise": {"factor": 0}}, "noise.factor = 0: Input should be greater than 0"),
        ({"noise": {"factor": float("nan")}}, "noise.factor = nan: Input should be a finite"),
        (
            {"evaluate": {"robustness_factors": [0.2, 0.0]}},
            "evaluate.robustness_factors.1 = 0.0: Input should be greater than 0",
        ),
        (
            {"evaluate": {"robustness_factors": [0.2, 0.2]}},
            "evaluate.robustness_factors = [0.2, 0.2]: give each factor once, in increasing order",
        ),
        (
            {"evaluate": {"robustness_factors": [0.6, 0.2]}},
            "evaluate.robustness_factors = [0.6, 0.2]: give each factor once",
        ),
        (
            {"train_basic": {"learning_rate": "1_0"}},
            "train_basic.learning_rate = '1_0': expected a number, got the text '1_0'",
        ),
        (
            {"train_basic": {"learning_rate": float("inf")}},
            "train_basic.learning_rate = inf: Input should be a finite number",
        ),
        ({"noise": {"factor": "lots"}}, "noise.factor = 'lots': expected a number"),
        (
            {"data": {"train_size": 60001}},
            "data.train_size = 60001: Input should be less than or equal to 60000",
        ),
        ({"data": {"test_size": 10001}}, "data.test_size = 10001"),
        ({"data": {"source": "s3"}}, "data.source = 's3': allowed are auto, keras, pypi"),
        (
            {"train_denoise": {"init_from": "imagenet"}},
            "train_denoise.init_from = 'imagenet': Input should be 'basic' or 'scratch'",
        ),
        (
            {"train_basic": {"learning_rate": 0}},
            "train_basic.learning_rate = 0: Input should be greater than 0",
        ),
    ],
)
def test_bad_values_name_key_value_and_rule(override, expected):
    message = error_for(override)
    assert message.startswith("params.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_cross_field_rules():
    assert "train_denoise.batch_size = 600: must not exceed data.train_size = 500" in error_for(
        {"data": {"train_size": 500}, "train_denoise": {"batch_size": 600}}
    )
    assert "evaluate.n_examples = 8: must not exceed data.test_size = 5" in error_for(
        {"data": {"test_size": 5}, "evaluate": {"n_examples": 8}}
    )
    assert "model.encoding_dim = 64: must not exceed data.train_size = 32" in error_for(
        {
            "data": {"train_size": 32},
            "train_basic": {"batch_size": 32},
            "train_denoise": {"batch_size": 32},
        }
    )


def params_file(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_numbers_are_read_as_dvc_reads_them_and_text_is_not_a_number(tmp_path):
    """DVC reads params.yaml as YAML 1.2, where `1e-3` is a number (PyYAML says text)."""
    committed = (REPO_ROOT / "params.yaml").read_text()
    assert "learning_rate: 0.001" in committed
    written_as_1e3 = committed.replace("learning_rate: 0.001", "learning_rate: 1e-3")
    assert load_params(params_file(tmp_path, written_as_1e3)) == load_params(
        REPO_ROOT / "params.yaml"
    )
    quoted = committed.replace("learning_rate: 0.001", "learning_rate: '0.001'", 1)
    message = error_message(ParamsError, load_params, params_file(tmp_path, quoted))
    assert "train_basic.learning_rate = '0.001': expected a number, got the text" in message


def test_a_key_given_twice_is_refused_as_dvc_refuses_it(tmp_path):
    twice = (REPO_ROOT / "params.yaml").read_text() + "seed: 3\n"
    message = error_message(ParamsError, load_params, params_file(tmp_path, twice))
    assert 'duplicate key "seed"' in message and "give each key once" in message
    assert "\n" not in message


def test_unreadable_params_files_are_named(tmp_path):
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes("seed: 0\n# caf\xe9\n".encode("latin-1"))
    assert "not UTF-8 text" in error_message(ParamsError, load_params, binary)
    assert "a directory, not a params file" in error_message(ParamsError, load_params, tmp_path)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    assert "not a regular file" in error_message(ParamsError, load_params, fifo)
    huge = tmp_path / "huge.yaml"
    huge.write_text("seed: 0\n" + "# padding\n" * 200_000)
    assert "a params file is at most" in error_message(ParamsError, load_params, huge)
    deep = tmp_path / "deep.yaml"
    deep.write_text("seed: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert "nested too deeply" in error_message(ParamsError, load_params, deep)


def test_not_a_mapping_and_bad_yaml(tmp_path):
    (tmp_path / "p.yaml").write_text("- a\n- b\n")
    assert "expected a mapping" in error_message(ParamsError, load_params, tmp_path / "p.yaml")
    (tmp_path / "q.yaml").write_text("seed: [1\n")
    assert "not valid YAML" in error_message(ParamsError, load_params, tmp_path / "q.yaml")
    assert "file not found" in error_message(ParamsError, load_params, tmp_path / "none.yaml")


def test_every_default_value_round_trips_through_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(default_params()))
    assert load_params(path) == load_params("params.yaml")
