"""Training checkpoints resume only what they can, and start afresh on anything unreadable."""

import json

import numpy as np
import pytest

from pipeline.modelling.checkpoints import CheckpointDir


@pytest.fixture
def checkpoint(tmp_path):
    saved = CheckpointDir(tmp_path / "train_basic", key="params-inputs-code")
    state = [np.arange(3.0), np.ones((2, 2)), np.array(4, np.int64)]  # an optimizer step is 0-d
    saved.save([(1, 0.5, 0.4), (2, 0.3, 0.35)], state, "run-1")
    return saved


def test_a_saved_epoch_is_resumed_with_its_run(checkpoint):
    resumed = checkpoint.load()
    assert resumed.rows == [(1, 0.5, 0.4), (2, 0.3, 0.35)]
    assert resumed.run_id == "run-1"
    np.testing.assert_array_equal(resumed.state[1], np.ones((2, 2)))
    assert resumed.state[2].shape == () and resumed.state[2] == 4
    assert CheckpointDir(checkpoint.directory, key="other").load() is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda state: state.pop("run_id"),
        lambda state: state.pop("rows"),
        lambda state: state.update(rows=[[1, "x", 0.3]]),
        lambda state: state.update(rows=7),
        lambda state: state.update(arrays="missing.npz"),
    ],
    ids=["no run_id", "no rows", "bad row", "rows not a list", "arrays missing"],
)
def test_a_damaged_state_file_starts_afresh(checkpoint, damage):
    state = json.loads(checkpoint.state_file.read_text())
    damage(state)
    checkpoint.state_file.write_text(json.dumps(state))
    assert checkpoint.load() is None


def test_a_state_file_that_is_not_an_object_starts_afresh(checkpoint):
    checkpoint.state_file.write_text("[1, 2]")
    assert checkpoint.load() is None


@pytest.mark.parametrize(
    "damage",
    [b"", b"PK\x03\x04 not a zip", b"\x00" * 100],
    ids=["empty", "broken zip", "zeros"],
)
def test_a_damaged_arrays_file_starts_afresh(checkpoint, damage):
    state = json.loads(checkpoint.state_file.read_text())
    (checkpoint.directory / state["arrays"]).write_bytes(damage)
    assert checkpoint.load() is None


@pytest.mark.parametrize(
    "rows", [[], [[2, 0.3, 0.3]], [[1, 0.5, 0.4], [3, 0.3, 0.3]]], ids=["none", "gap", "skip"]
)
def test_epochs_that_do_not_count_up_from_one_start_afresh(checkpoint, rows):
    state = json.loads(checkpoint.state_file.read_text())
    state["rows"] = rows
    checkpoint.state_file.write_text(json.dumps(state))
    assert checkpoint.load() is None


def test_a_state_that_cannot_be_written_leaves_the_last_pair_and_no_stray_arrays(checkpoint):
    """An infinite loss in the rows cannot be strict JSON: the save fails, and the arrays it
    wrote first are removed, so the directory holds the previous epoch exactly."""
    before = sorted(p.name for p in checkpoint.directory.iterdir())
    with pytest.raises(ValueError):
        checkpoint.save([(1, 0.5, 0.4), (2, 0.3, 0.35), (3, 0.2, float("inf"))], [], "run-1")
    assert sorted(p.name for p in checkpoint.directory.iterdir()) == before
    assert checkpoint.load().rows == [(1, 0.5, 0.4), (2, 0.3, 0.35)]
