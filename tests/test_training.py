"""Models, the training loop and model files, on small synthetic data (one TF import)."""

import time

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.artifacts import keras_archive  # noqa: E402
from pipeline.core.errors import DataError, TrainingDiverged  # noqa: E402
from pipeline.modelling import architectures, model_files, training  # noqa: E402


def blobs(n=192, seed=0):
    """Images made of a few bright strokes, learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 784), np.float32)
    for row, start in zip(images, rng.integers(0, 700, n), strict=True):
        row[start : start + 60] = 1.0
    return images


def trained(epochs=2, seed=0, lr=1e-3, data=None, batch_size=32, **kwargs):
    data = blobs() if data is None else data
    training.enable_determinism(seed)
    model = architectures.compile_for_training(architectures.build_autoencoder(16), lr)
    history = training.fit(
        model,
        data,
        data,
        data[:64],
        data[:64],
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        **kwargs,
    )
    return model, history


def test_tutorial_model_shapes():
    model = architectures.build_autoencoder(64)
    assert model.count_params() == 101_200
    assert architectures.encoder_of(model).output_shape == (None, 64)
    assert model.output_shape == (None, 784)


def test_training_is_bit_for_bit_deterministic_and_learns():
    first, history = trained(epochs=3)
    second, again = trained(epochs=3)
    assert history == again
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert history[-1].loss < history[0].loss
    assert [r.epoch for r in history] == [1, 2, 3]


def test_a_different_seed_gives_a_different_model():
    _, history = trained(seed=0)
    _, other = trained(seed=1)
    assert history != other


def test_partial_last_batch_and_validation_loss_agree_with_keras():
    data = blobs(100)  # 3 full batches of 32 and one of 4
    model, history = trained(epochs=1, data=data)
    assert history[0].val_loss == pytest.approx(
        model.evaluate(data[:64], data[:64], batch_size=64, verbose=0), rel=1e-5
    )


def test_divergence_stops_at_the_first_bad_epoch():
    epochs_seen = []
    with pytest.raises(
        TrainingDiverged,
        match=r"diverged: loss .* in epoch 1 .* lower the learning rate \(currently 1e\+06\)",
    ):
        trained(epochs=3, lr=1e6, on_epoch_end=epochs_seen.append)
    assert epochs_seen == []


def test_a_nan_loss_is_caught(monkeypatch):
    monkeypatch.setattr(training.EpochRunner, "train_epoch", lambda self, x, y, order: float("nan"))
    with pytest.raises(TrainingDiverged, match="loss nan in epoch 1"):
        trained(epochs=2)


def test_a_validation_loss_that_explodes_after_the_last_step_is_caught(monkeypatch):
    """The epoch's training loss is taken before each step; a last step can still blow the
    weights up. Nothing is reported (so nothing checkpointed or logged) for that epoch."""
    monkeypatch.setattr(training.EpochRunner, "validation_loss", lambda self, x, y: 8.7e14)
    epochs_seen = []
    with pytest.raises(TrainingDiverged, match=r"diverged: val_loss 8\.7e\+14 in epoch 1"):
        trained(epochs=2, on_epoch_end=epochs_seen.append)
    assert epochs_seen == []
    monkeypatch.setattr(training.EpochRunner, "validation_loss", lambda self, x, y: float("inf"))
    with pytest.raises(TrainingDiverged, match="val_loss inf in epoch 1"):
        trained(epochs=1)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    order = training.epoch_permutation(0, 3, 50)
    np.testing.assert_array_equal(order, training.epoch_permutation(0, 3, 50))
    assert sorted(order) == list(range(50))
    assert not np.array_equal(order, training.epoch_permutation(0, 4, 50))


def test_saved_models_have_identical_bytes_and_reload_exactly(tmp_path):
    model, _ = trained(epochs=1)
    model_files.save_model(model, tmp_path / "a.keras")
    time.sleep(1.1)  # Keras stamps the save time to the second
    model_files.save_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    reloaded = model_files.load_model(tmp_path / "a.keras")
    data = blobs(8)
    np.testing.assert_array_equal(
        architectures.predict(model, data), architectures.predict(reloaded, data)
    )
    assert int(reloaded.optimizer.iterations) == int(model.optimizer.iterations) > 0


def test_shared_object_ids_are_renumbered_in_order_of_appearance():
    config = {
        "a": {"shared_object_id": 140269542413904},
        "b": [{"shared_object_id": 99}, {"shared_object_id": 140269542413904}],
    }
    assert keras_archive.renumber_shared_objects(config) == {
        "a": {"shared_object_id": 1},
        "b": [{"shared_object_id": 2}, {"shared_object_id": 1}],
    }


def test_a_corrupted_model_file_is_named(tmp_path):
    model, _ = trained(epochs=1)
    path = tmp_path / "m.keras"
    model_files.save_model(model, path)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated: not even a zip archive
    with pytest.raises(DataError, match=r"m\.keras: not a Keras archive \(truncated or corrupted"):
        model_files.load_model(path)
    middle = len(data) // 2  # a zip whose members are damaged
    path.write_bytes(
        bytes(data[:middle]) + bytes(b ^ 0xFF for b in data[middle:-200]) + data[-200:]
    )
    with pytest.raises(DataError, match=r"m\.keras: not (a loadable Keras model|a Keras archive)"):
        model_files.load_model(path)


@pytest.mark.parametrize("kind", architectures.KINDS)
def test_every_kind_trains_saves_reloads_and_encodes_alike(kind, tmp_path):
    data = blobs(64)
    training.enable_determinism(0)
    model = architectures.compile_for_training(
        architectures.build_autoencoder(8, kind, seed=0), 1e-3
    )
    history = training.fit(
        model,
        data,
        data,
        data[:16],
        data[:16],
        epochs=1,
        batch_size=16,
        seed=0,
        jit_compile=architectures.uses_xla(kind),
    )
    assert np.isfinite(history[0].loss)
    model_files.save_model(model, tmp_path / "m.keras")
    reloaded = model_files.load_model(tmp_path / "m.keras")
    assert architectures.kind_of(reloaded) == kind
    np.testing.assert_array_equal(
        architectures.predict(model, data), architectures.predict(reloaded, data)
    )
    assert architectures.predict(architectures.encoder_of(reloaded), data).shape == (64, 8)
    assert architectures.decoder_of(reloaded).input_shape == (None, 8)


@pytest.mark.parametrize("kind", architectures.KINDS)
def test_resuming_from_a_saved_state_repeats_the_uninterrupted_run(kind):
    data = blobs(64)

    def fresh():
        training.enable_determinism(0)
        return architectures.compile_for_training(
            architectures.build_autoencoder(8, kind, seed=0), 1e-3
        )

    def train(model, first, last):
        return training.fit(
            model,
            data,
            data,
            data[:16],
            data[:16],
            epochs=last,
            batch_size=16,
            seed=0,
            first_epoch=first,
            jit_compile=architectures.uses_xla(kind),
        )

    straight = fresh()
    expected = train(straight, 1, 3)
    interrupted = fresh()
    head = train(interrupted, 1, 1)
    state = training.training_state(interrupted)
    resumed = fresh()  # a new process would start from scratch like this
    training.restore_training_state(resumed, state)
    assert head + train(resumed, 2, 3) == expected
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_vae_adds_its_kl_term_and_samples_only_while_training():
    data = blobs(32)
    training.enable_determinism(0)
    vae = architectures.build_autoencoder(8, "vae", seed=0)
    np.testing.assert_array_equal(vae(data, training=False), vae(data, training=False))
    assert not np.array_equal(vae(data, training=True), vae(data, training=True))
    vae(data, training=False)
    assert len(vae.losses) == 1 and float(vae.losses[0]) >= 0


@pytest.mark.parametrize("kind", architectures.KINDS)
def test_a_run_that_turns_to_nan_is_stopped_in_one_line_before_the_epoch_counts(kind):
    """The kind of draw that once got through: seven training images, learning rate 1e5. An
    epoch's training loss is taken before its steps and can be finite while the weights that
    come out of them are not; the validation loss, after them, is not."""
    data = blobs(7)
    training.enable_determinism(0)
    model = architectures.compile_for_training(architectures.build_autoencoder(4, kind, 0), 1e5)
    reported = []
    with pytest.raises(TrainingDiverged, match=r"^training diverged: .* in epoch \d+ ") as stopped:
        training.fit(
            model, data, data, data, data, epochs=20, batch_size=7, seed=0,
            jit_compile=architectures.uses_xla(kind), on_epoch_end=reported.append,
        )  # fmt: skip
    assert "\n" not in str(stopped.value)
    assert all(np.isfinite([r.loss, r.val_loss]).all() for r in reported)
