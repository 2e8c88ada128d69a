"""Metrics, classical baselines and the linear probe, on small synthetic arrays."""

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline import baselines, evaluation
from pipeline.metrics import mean_psnr, mean_ssim
from pipeline.probe import probe_accuracy
from pipeline.stages.noise import add_gaussian_noise


def strokes(n=40, seed=0):
    """Images of one bright horizontal or vertical bar: smooth, sparse, like digits."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28))
    for image, position, vertical in zip(
        images, rng.integers(6, 20, n), rng.random(n) < 0.5, strict=True
    ):
        if vertical:
            image[4:24, position : position + 4] = 1.0
        else:
            image[position : position + 4, 4:24] = 1.0
    return images.reshape(n, 784)


def test_ssim_and_psnr_are_scikit_image_per_image_means():
    rng = np.random.default_rng(1)
    clean, noisy = rng.random((6, 784)), rng.random((6, 784))
    assert mean_ssim(clean, clean) == pytest.approx(1.0)
    per_image = [
        structural_similarity(a.reshape(28, 28), b.reshape(28, 28), data_range=1.0)
        for a, b in zip(clean, noisy, strict=True)
    ]
    assert mean_ssim(clean, noisy) == pytest.approx(np.mean(per_image))
    assert mean_psnr(clean, noisy) == pytest.approx(
        np.mean(
            [
                peak_signal_noise_ratio(a, b, data_range=1.0)
                for a, b in zip(clean, noisy, strict=True)
            ]
        )
    )


@pytest.mark.parametrize("baseline", baselines.FILTERS, ids=lambda b: b.name)
def test_each_filter_improves_on_noisy_strokes(baseline):
    clean = strokes()
    noisy = add_gaussian_noise(clean, 0.3, np.random.default_rng(0))
    value = baselines.tune(baseline, noisy[:20], clean[:20])
    assert value in baseline.grid
    denoised = baseline(noisy[20:], value)
    assert denoised.shape == noisy[20:].shape and denoised.min() >= 0 and denoised.max() <= 1
    assert mean_psnr(clean[20:], denoised) > mean_psnr(clean[20:], noisy[20:]) + 2.0


def test_pca_recovers_images_from_a_low_dimensional_family():
    clean = strokes(200)
    noisy = add_gaussian_noise(clean, 0.3, np.random.default_rng(0))
    pca = baselines.pca_baseline(clean[:150], components=32)
    gain = mean_psnr(clean[150:], pca(noisy[150:], 32)) - mean_psnr(clean[150:], noisy[150:])
    assert gain > 6.0


def test_tune_picks_the_grid_value_with_the_best_psnr():
    clean = strokes(10)
    noisy = add_gaussian_noise(clean, 0.3, np.random.default_rng(0))
    # "denoises" by mixing in the clean image: more of it is always better
    cheat = baselines.Baseline(
        "mix", "w", (0.0, 0.5, 0.9, 0.2), lambda x, w: (1 - w) * x + w * clean
    )
    assert baselines.tune(cheat, noisy, clean) == 0.9


def test_compare_denoisers_scores_every_method_and_sorts_best_first():
    clean = strokes(30)
    noisy = add_gaussian_noise(clean, 0.4, np.random.default_rng(0))
    methods = [baselines.FILTERS[1], baselines.pca_baseline(clean, 8)]
    rows, outputs = evaluation.compare_denoisers(
        methods, clean[:20], noisy[:20], clean[20:], noisy[20:], "perfect_autoencoder", clean[:20]
    )
    assert rows[0]["method"] == "perfect_autoencoder"
    assert {row["method"] for row in rows} == {
        "perfect_autoencoder",
        "median",
        "pca",
        "noisy_input",
    }
    assert [row["psnr"] for row in rows] == sorted((row["psnr"] for row in rows), reverse=True)
    assert rows[0]["ssim"] == pytest.approx(1.0)
    assert outputs["median"].shape == (20, 784)


def test_robustness_curve_of_a_do_nothing_denoiser_follows_the_noisy_input():
    clean = strokes(20)
    rows = evaluation.robustness_curve(
        lambda x: x, baselines.FILTERS[0], clean[:10], clean[10:], [0.1, 0.4, 0.8], seed=3
    )
    assert [row["noise_factor"] for row in rows] == [0.1, 0.4, 0.8]
    assert all(row["denoiser_psnr"] == row["noisy_psnr"] for row in rows)
    psnrs = [row["noisy_psnr"] for row in rows]
    assert psnrs == sorted(psnrs, reverse=True)


def test_probe_separates_informative_codes_from_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    informative = np.eye(3)[labels] * 5 + rng.normal(0, 0.1, (300, 3))
    useless = rng.normal(0, 1, (300, 3))
    assert probe_accuracy(informative[:200], labels[:200], informative[200:], labels[200:]) == 1.0
    assert probe_accuracy(useless[:200], labels[:200], useless[200:], labels[200:]) < 0.6


def test_representation_probe_adds_pca_and_raw_pixels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    pixels = rng.random((120, 784)) + labels[:, None] * 0.5
    codes = pixels[:, :4]
    result = evaluation.representation_probe(
        {"codes": (codes[:80], codes[80:])},
        pixels[:80],
        labels[:80],
        pixels[80:],
        labels[80:],
        components=4,
    )
    assert set(result) == {"codes", "pca_4", "raw_pixels"}
    assert result["raw_pixels"] > 0.9


def test_code_map_is_two_dimensional_and_seeded():
    codes = np.random.default_rng(0).random((50, 8))
    first = evaluation.embed_2d(codes, seed=1)
    assert first.shape == (50, 2)
    np.testing.assert_array_equal(first, evaluation.embed_2d(codes, seed=1))
