import numpy as np
import pytest

from pipeline.stages.noise import add_gaussian_noise, noisy_copies
from pipeline.stages.prepare import flatten_and_scale, prepare_split


def synthetic_raw(n_train=20, n_test=6):
    rng = np.random.default_rng(3)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }


def test_flatten_and_scale_is_the_tutorials_division_by_255():
    images = np.array([[[0, 255], [51, 1]]], dtype=np.uint8).repeat(196, axis=2).reshape(1, 28, 28)
    scaled = flatten_and_scale(images)
    assert scaled.shape == (1, 784) and scaled.dtype == np.float32
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    assert np.float32(51 / 255) in scaled


def test_prepare_takes_the_first_images_in_order():
    raw = synthetic_raw()
    split = prepare_split(raw, train_size=5, test_size=2, tuning_size=3)
    assert split.x_train.shape == (5, 784) and split.x_test.shape == (2, 784)
    np.testing.assert_array_equal(split.x_tuning, flatten_and_scale(raw["x_train"][-3:]))
    np.testing.assert_array_equal(split.x_train[4], raw["x_train"][4].ravel() / np.float32(255))
    np.testing.assert_array_equal(split.y_test, raw["y_test"][:2])


def test_noise_is_clipped_seeded_and_has_the_requested_strength():
    clean = np.full((400, 784), 0.5, dtype=np.float32)
    noisy = add_gaussian_noise(clean, 0.1, np.random.default_rng(0))
    assert noisy.dtype == np.float32
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert np.std(noisy - clean) == pytest.approx(0.1, rel=0.02)
    saturated = add_gaussian_noise(clean, 5.0, np.random.default_rng(0))
    assert set(np.unique(saturated)) >= {0.0, 1.0}


def test_noisy_copies_depend_only_on_data_factor_and_seed():
    split = prepare_split(synthetic_raw(), 20, 6, 4)
    first = noisy_copies(split, 0.4, seed=7)
    again = noisy_copies(split, 0.4, seed=7)
    other = noisy_copies(split, 0.4, seed=8)
    np.testing.assert_array_equal(first["x_test"], again["x_test"])
    assert not np.array_equal(first["x_train"], other["x_train"])
    assert not np.array_equal(first["x_train"][:6], first["x_test"])  # independent draws
    zero = noisy_copies(split, 0.0, seed=7)
    np.testing.assert_array_equal(zero["x_train"], split.x_train)
