import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.evaluation import figures, metrics
from pipeline.evaluation.metrics import (
    PSNR_CEILING_DB,
    binary_cross_entropy,
    mean_psnr,
    mean_squared_error,
    psnr_per_image,
    ssim_per_image,
)


def test_bce_by_hand():
    target = np.array([[1.0, 0.0]])
    predicted = np.array([[0.8, 0.4]])
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert binary_cross_entropy(target, predicted) == pytest.approx(expected)


def test_bce_clips_like_keras():
    assert binary_cross_entropy(np.array([[1.0]]), np.array([[0.0]])) == pytest.approx(
        -math.log(1e-7)
    )


def test_mse_and_psnr_by_hand():
    target = np.zeros((2, 4))
    predicted = np.array([[0.1, 0.1, 0.1, 0.1], [0.5, 0.0, 0.0, 0.0]])
    # image 1: mse 0.01 -> 20 dB; image 2: mse 0.0625 -> 12.0412 dB
    assert mean_squared_error(target, predicted) == pytest.approx((0.01 + 0.0625) / 2)
    assert mean_psnr(target, predicted) == pytest.approx((20.0 + 10 * math.log10(16)) / 2)


def _image_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Clean images and degraded copies: noise of several strengths, exact copy, inverse."""
    rng = np.random.default_rng(3)
    clean = np.clip(rng.random((6, 784)) ** 3, 0, 1)
    clean[3] = 0.25  # constant image
    predicted = np.clip(
        clean + rng.normal(0, [[0.05], [0.2], [0.4], [0.1], [0.0], [0.3]], (6, 784)), 0, 1
    )
    predicted[4] = 1 - clean[4]
    return clean.astype(np.float32), predicted.astype(np.float32)


def test_stacked_psnr_equals_skimage_per_image():
    clean, predicted = _image_pairs()
    as_image = lambda flat: flat.reshape(28, 28).astype(np.float64)  # noqa: E731
    expected_psnr = [
        peak_signal_noise_ratio(as_image(t), as_image(p), data_range=1.0)
        for t, p in zip(clean, predicted, strict=True)
    ]
    np.testing.assert_allclose(psnr_per_image(clean, predicted), expected_psnr, rtol=1e-12)


def _skimage_ssim(clean: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    as_image = lambda flat: flat.reshape(28, 28).astype(np.float64)  # noqa: E731
    return np.array(
        [
            structural_similarity(as_image(t), as_image(p), data_range=1.0)
            for t, p in zip(clean, predicted, strict=True)
        ]
    )


def test_stacked_ssim_is_skimage_per_image_to_the_last_bit():
    clean, predicted = _image_pairs()
    assert np.array_equal(ssim_per_image(clean, predicted), _skimage_ssim(clean, predicted))
    assert np.array_equal(ssim_per_image(clean, clean), np.ones(len(clean)))


@settings(max_examples=20, deadline=None)
@given(
    images=st.integers(1, 9),
    chunk=st.integers(1, 4),
    noise=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_stacked_ssim_in_any_chunks_is_skimage_per_image(images, chunk, noise, seed):
    rng = np.random.default_rng(seed)
    clean = (rng.random((images, 784)) ** 3).astype(np.float32)
    predicted = np.clip(clean + rng.normal(0, noise, clean.shape), 0, 1).astype(np.float32)
    old_chunk, metrics.SSIM_CHUNK = metrics.SSIM_CHUNK, chunk
    try:
        stacked = ssim_per_image(clean, predicted)
    finally:
        metrics.SSIM_CHUNK = old_chunk
    assert np.array_equal(stacked, _skimage_ssim(clean, predicted))


def test_bce_of_a_stack_is_the_textbook_formula():
    clean, predicted = _image_pairs()
    p = np.clip(predicted.astype(np.float64), 1e-7, 1 - 1e-7)
    t = clean.astype(np.float64)
    expected = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
    assert binary_cross_entropy(clean, predicted) == pytest.approx(expected, rel=1e-13)
    assert np.array_equal(predicted, _image_pairs()[1])  # the inputs are not overwritten


def test_psnr_of_identical_images_is_capped_not_infinite():
    clean, noisy = _image_pairs()
    assert (psnr_per_image(clean, clean) == PSNR_CEILING_DB).all()
    assert (psnr_per_image(clean, noisy) < PSNR_CEILING_DB).all()


@pytest.mark.parametrize(
    ("dim", "shape"), [(64, (4, 16)), (32, (4, 8)), (30, (3, 10)), (7, (1, 7))]
)
def test_code_image_shape(dim, shape):
    assert figures.code_image_shape(dim) == shape


def test_figures_are_written_with_identical_bytes(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((3, 784))
    for name in ("a", "b"):
        figures.save_png(
            figures.image_rows({"x": images, "y": images[::-1]}), tmp_path / f"{name}.png"
        )
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = figures.loss_curves({"train_basic": [(1, 0.3, 0.2), (2, 0.2, 0.15)]})
    assert fig.axes[0].get_title() == "train_basic"
    fig = figures.code_grid(rng.random((5, 64)))
    assert len(fig.axes) == 5 and fig.axes[0].images[0].get_array().shape == (16, 4)
