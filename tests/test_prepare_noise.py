import numpy as np
import pytest

from pipeline.data.noise import (
    add_gaussian_noise,
    at_each_factor,
    noisy_copies,
    noisy_split,
    standard_normal,
)
from pipeline.data.preparation import flatten_and_scale, prepare_split


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
    noisy = noisy_split(clean, "x_test", 0.1, seed=0)
    assert noisy.dtype == np.float32
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert np.std(noisy - clean) == pytest.approx(0.1, rel=0.02)
    np.testing.assert_array_equal(noisy, noisy_split(clean, "x_test", 0.1, seed=0))
    saturated = add_gaussian_noise(clean, 5.0, standard_normal(0, "x_test", clean.shape))
    assert set(np.unique(saturated)) >= {0.0, 1.0}


def test_each_split_draws_from_its_own_stream():
    split = prepare_split(synthetic_raw(), 20, 6, 4)
    first = noisy_copies(split, 0.4, seed=7)
    again = noisy_copies(split, 0.4, seed=7)
    other = noisy_copies(split, 0.4, seed=8)
    for name in ("x_train", "x_test", "x_tuning"):
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])
    train_draws = standard_normal(7, "x_train", (6, 784))
    assert not np.array_equal(train_draws, standard_normal(7, "x_test", (6, 784)))


def test_the_noisy_test_images_do_not_depend_on_the_other_splits_sizes():
    raw = synthetic_raw(n_train=30, n_test=8)
    small = noisy_copies(prepare_split(raw, 10, 8, 3), 0.4, seed=1)
    large = noisy_copies(prepare_split(raw, 30, 8, 12), 0.4, seed=1)
    np.testing.assert_array_equal(small["x_test"], large["x_test"])
    np.testing.assert_array_equal(small["x_train"], large["x_train"][:10])


def test_a_smaller_test_set_gets_the_first_noisy_images_of_a_larger_one():
    raw = synthetic_raw(n_test=8)
    few = noisy_copies(prepare_split(raw, 10, 3, 2), 0.4, seed=1)
    all_ = noisy_copies(prepare_split(raw, 10, 8, 2), 0.4, seed=1)
    np.testing.assert_array_equal(few["x_test"], all_["x_test"][:3])


def test_the_robustness_curve_at_the_benchmark_factor_is_the_benchmark():
    split = prepare_split(synthetic_raw(), 20, 6, 4)
    benchmark = noisy_copies(split, 0.4, seed=3)["x_test"]
    curve = dict(at_each_factor(split.x_test[:4], "x_test", [0.2, 0.4], seed=3))
    np.testing.assert_array_equal(curve[0.4], benchmark[:4])
    assert (
        np.abs(curve[0.2] - split.x_test[:4]).mean() < np.abs(curve[0.4] - split.x_test[:4]).mean()
    )
