"""Metrics, classical baselines and the linear probe, on small synthetic arrays."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import denoise_tv_chambolle

from pipeline.artifacts import baseline_results
from pipeline.data.noise import add_gaussian_noise
from pipeline.evaluation import autoencoders, baselines, classical, parallel, probe, table
from pipeline.evaluation.metrics import mean_psnr, mean_ssim
from pipeline.evaluation.probe import probe_accuracy


def noisy_version(clean, factor, seed):
    draws = np.random.default_rng(seed).standard_normal(clean.shape)
    return add_gaussian_noise(clean, factor, draws)


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


@pytest.mark.parametrize("baseline", classical.FILTERS, ids=lambda b: b.name)
def test_each_filter_improves_on_noisy_strokes(baseline):
    clean = strokes()
    noisy = noisy_version(clean, 0.3, seed=0)
    value = classical.tune(baseline, noisy[:20], clean[:20])
    assert value in baseline.grid
    denoised = baseline(noisy[20:], value)
    assert denoised.shape == noisy[20:].shape and denoised.min() >= 0 and denoised.max() <= 1
    assert mean_psnr(clean[20:], denoised) > mean_psnr(clean[20:], noisy[20:]) + 2.0


def test_pca_recovers_images_from_a_low_dimensional_family():
    clean = strokes(200)
    noisy = noisy_version(clean, 0.3, seed=0)
    pca = classical.pca_baseline(clean[:150], components=32)
    gain = mean_psnr(clean[150:], pca(noisy[150:], 32)) - mean_psnr(clean[150:], noisy[150:])
    assert gain > 6.0


def test_tune_picks_the_grid_value_with_the_best_psnr():
    clean = strokes(10)
    noisy = noisy_version(clean, 0.3, seed=0)
    # "denoises" by mixing in the clean image: more of it is always better
    cheat = classical.Baseline(
        "mix", "w", (0.0, 0.5, 0.9, 0.2), lambda x, w: (1 - w) * x + w * clean
    )
    assert classical.tune(cheat, noisy, clean) == 0.9


def test_compare_baselines_scores_each_baseline_as_tuned():
    clean = strokes(30)
    noisy = noisy_version(clean, 0.4, seed=0)
    methods = [classical.FILTERS[1], classical.pca_baseline(clean, 8)]
    rows, outputs = baselines.compare_baselines(
        methods, clean[:20], noisy[:20], clean[20:], noisy[20:]
    )
    assert [row["method"] for row in rows] == ["median", "pca"]
    for row, method in zip(rows, methods, strict=True):
        assert row["value"] in method.grid and row["parameter"] == method.parameter
        assert row["psnr"] == pytest.approx(mean_psnr(clean[:20], outputs[row["method"]]))
        assert row["psnr"] > mean_psnr(clean[:20], noisy[:20])
    assert outputs["median"].shape == (20, 784)
    perfect = table.table_row("perfect_autoencoder", 99.0, 1.0)
    ranked = table.best_first([*rows, perfect])
    assert ranked[0] is perfect
    assert [row["psnr"] for row in ranked] == sorted((row["psnr"] for row in ranked), reverse=True)


def test_both_halves_of_the_robustness_curve_score_the_same_noisy_images():
    clean = strokes(20)
    factors = [0.1, 0.4, 0.8]
    rows = baselines.baseline_robustness(
        classical.FILTERS[0], clean[:10], clean[10:], factors, seed=3
    )
    do_nothing = autoencoders.denoiser_robustness(lambda x: x, clean[:10], factors, seed=3)
    assert [row["noise_factor"] for row in rows] == factors
    assert do_nothing == [row["noisy_psnr"] for row in rows]
    assert do_nothing == sorted(do_nothing, reverse=True)


def test_per_image_cuts_aligned_parts_and_keeps_the_order(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_IMAGES", 2)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    images = np.arange(10.0).reshape(10, 1)

    def add_part_size(part, other, offset):  # reveals how the stacks were cut
        return part + other + offset * len(part)

    np.testing.assert_array_equal(
        parallel.per_image(add_part_size, [images, images], 1.0), 2 * images + 5
    )
    monkeypatch.setattr(parallel, "usable_cores", lambda: 1)
    np.testing.assert_array_equal(
        parallel.per_image(add_part_size, [images, images], 1.0), 2 * images + 10
    )


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores")
def test_the_pool_is_sized_by_the_cores_this_process_may_use():
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})  # as `taskset -c 0` would
        assert parallel.usable_cores() == 1
    finally:
        os.sched_setaffinity(0, allowed)
    assert parallel.usable_cores() == len(allowed)


def test_parallel_filters_and_ssim_give_the_serial_result(monkeypatch):
    clean = strokes(6)
    noisy = noisy_version(clean, 0.4, seed=1)
    serial_filter = classical.non_local_means(noisy, 0.2)
    serial_ssim = mean_ssim(clean, noisy)
    monkeypatch.setattr(parallel, "MIN_IMAGES", 2)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    np.testing.assert_array_equal(
        classical.in_parallel(classical.non_local_means)(noisy, 0.2), serial_filter
    )
    assert mean_ssim(clean, noisy) == serial_ssim


def test_probe_separates_informative_codes_from_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    informative = np.eye(3)[labels] * 5 + rng.normal(0, 0.1, (300, 3))
    useless = rng.normal(0, 1, (300, 3))
    assert probe_accuracy(informative[:200], labels[:200], informative[200:], labels[200:]) == 1.0
    assert probe_accuracy(useless[:200], labels[:200], useless[200:], labels[200:]) < 0.6


def test_probe_accuracies_scores_each_feature_set():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    pixels = rng.random((120, 784)) + labels[:, None] * 0.5
    noise = rng.random((120, 4))
    result = probe.probe_accuracies(
        {"pixels": (pixels[:80], pixels[80:]), "noise": (noise[:80], noise[80:])},
        labels[:80],
        labels[80:],
    )
    assert list(result) == ["pixels", "noise"]
    assert result["pixels"] > 0.9 > result["noise"]


def test_code_map_is_two_dimensional_and_seeded():
    codes = np.random.default_rng(0).random((50, 8))
    first = autoencoders.embed_2d(codes, seed=1)
    assert first.shape == (50, 2)
    np.testing.assert_array_equal(first, autoencoders.embed_2d(codes, seed=1))


def test_baseline_results_round_trip_and_name_a_malformed_file(tmp_path, monkeypatch):
    from pipeline.core.errors import DataError

    monkeypatch.chdir(tmp_path)
    examples = {"median": np.full((2, 784), 0.5, np.float32)}
    results = baseline_results.BaselineResults(
        table=[
            table.table_row("median", 15.5, 0.55, "size", 3),
            table.table_row(baseline_results.NOISY_INPUT, 11.0, 0.44),
        ],
        best="median",
        robustness=[{"noise_factor": 0.4, "baseline_psnr": 15.0, "noisy_psnr": 11.0}],
        noisy_input={"bce": 0.49, "mse": 0.08, "psnr": 11.0, "ssim": 0.44},
        probe_accuracy={"pca_4": 0.9, "raw_pixels": 0.91},
        examples=examples,
    )
    baseline_results.save(results)
    loaded = baseline_results.load()
    assert (loaded.table, loaded.best, loaded.probe_accuracy) == (
        results.table,
        "median",
        results.probe_accuracy,
    )
    np.testing.assert_array_equal(loaded.examples["median"], examples["median"])
    baseline_results.RESULTS_FILE.write_text('{"table": []}')
    with pytest.raises(DataError, match=r"data/baselines/results.json: malformed .*'best'"):
        baseline_results.load()


def tiny_split(n_train=12, n_test=1, n_tuning=3):
    from pipeline.data.images import NoisySplit, Split

    images = strokes(n_train + n_test + n_tuning).astype(np.float32)
    labels = (np.arange(len(images)) % 3).astype(np.uint8)
    split = Split(
        x_train=images[:n_train],
        y_train=labels[:n_train],
        x_test=images[n_train : n_train + n_test],
        y_test=labels[n_train : n_train + n_test],
        x_tuning=images[n_train + n_test :],
    )
    noisy = NoisySplit(
        *(noisy_version(getattr(split, n), 0.4, 0) for n in ("x_train", "x_test", "x_tuning"))
    )
    return split, noisy


def tiny_params(train_size, test_size, tuning_size, dim, shown, factors, kind="dense"):
    from pipeline.core.config import parse_params
    from tests.conftest import default_params, merge

    batch = {"batch_size": dim}
    return parse_params(
        merge(
            default_params(),
            {
                "data": {
                    "train_size": train_size,
                    "test_size": test_size,
                    "tuning_size": tuning_size,
                },
                "model": {"kind": kind, "encoding_dim": dim},
                "train_basic": batch,
                "train_denoise": batch,
                "evaluate": {
                    "n_examples": shown,
                    "robustness_size": min(test_size, 6),
                    "robustness_factors": factors,
                },
            },
        )
    )


def test_evaluate_runs_on_a_single_test_image_and_collapsed_codes():
    """One test image (t-SNE and the VAE walk need two points) and codes that are all equal (a
    collapsed model: scikit-learn's PCA-initialised t-SNE crashes the process on them)."""
    params = tiny_params(12, 1, 3, dim=4, shown=1, factors=[0.4], kind="vae")
    split, noisy = tiny_split()
    lines = []
    reference = baselines.score_baselines(params, split, noisy, lines.append)
    # Progress as the work happens: one line per baseline, then the curve and the probes.
    assert [line.split(":")[0] for line in lines[: len(reference.table) - 1]] == [
        name for name in (b.name for b in baselines.all_baselines(split.x_train, 4))
    ]
    assert lines[-1].startswith("linear probe on PCA features and raw pixels: pca_")
    collapsed = autoencoders.Autoencoders(
        kind="vae",
        reconstruct=lambda images: np.clip(images * 0.9, 0, 1),
        denoise=lambda images: np.clip(images * 0.8, 0, 1),
        encode_basic=lambda images: np.zeros((len(images), 4), np.float32),
        encode_denoiser=lambda images: np.zeros((len(images), 4), np.float32),
        decode_basic=lambda codes: np.full((len(codes), 784), 0.5, np.float32),
    )
    histories = {"train_basic": [(1, 0.3, 0.2)], "train_denoise": [(1, 0.2, 0.1)]}
    steps = []
    result = autoencoders.evaluate_autoencoders(
        params, split, noisy, reference, collapsed, histories, steps.append
    )
    assert [step.split(":")[0].split(" ")[0] for step in steps] == [
        "both", "denoiser", "t-SNE", "linear"
    ]  # fmt: skip
    assert {"code_map", "vae_interpolation", "vae_prior_samples"} <= set(result.figures)
    assert result.metrics["model_kind"] == "vae"
    assert [row["noise_factor"] for row in result.robustness] == [0.4]
    assert autoencoders.embed_2d(np.zeros((1, 4)), seed=0).shape == (1, 2)
    assert np.isfinite(autoencoders.embed_2d(np.zeros((10, 4)), seed=0)).all()
    assert np.isfinite(autoencoders.embed_2d(np.arange(10.0)[:, None], seed=0)).all()


def test_a_model_whose_outputs_are_not_numbers_is_refused_before_any_scoring():
    """NaN weights (a run that diverged) would cost the whole evaluation and end in a library's
    traceback; it ends in one line naming the model, before anything is computed."""
    from pipeline.core.errors import DataError

    params = tiny_params(12, 1, 3, dim=4, shown=1, factors=[0.4])
    split, noisy = tiny_split()
    encoded = []

    def encode(images):
        encoded.append(len(images))
        return np.zeros((len(images), 4), np.float32)

    diverged = autoencoders.Autoencoders(
        kind="dense",
        reconstruct=lambda images: np.clip(images, 0, 1),
        denoise=lambda images: np.where(images > 0.5, np.nan, images),
        encode_basic=encode,
        encode_denoiser=encode,
        decode_basic=lambda codes: np.zeros((len(codes), 784), np.float32),
    )
    with pytest.raises(DataError, match=r"^the denoiser outputs NaN or infinite values for 1"):
        autoencoders.evaluate_autoencoders(params, split, noisy, None, diverged, {})
    assert encoded == []


def test_the_baselines_core_gives_the_same_results_twice():
    """What `dvc repro --force` relies on for data/baselines to come out byte for byte."""

    params = tiny_params(40, 12, 4, dim=8, shown=3, factors=[0.2, 0.6])
    split, noisy = tiny_split(40, 12, 4)
    first, again = (baselines.score_baselines(params, split, noisy) for _ in range(2))
    assert (first.table, first.robustness, first.probe_accuracy, first.noisy_input) == (
        again.table,
        again.robustness,
        again.probe_accuracy,
        again.noisy_input,
    )
    for name, output in first.examples.items():
        np.testing.assert_array_equal(output, again.examples[name])


@settings(max_examples=15, deadline=None)
@given(
    images=st.integers(1, 7),
    chunk=st.integers(1, 4),
    weight=st.floats(0.01, 1.0),
    noise=st.floats(0, 0.8),
    max_iterations=st.sampled_from([1, 2, 5, 200]),
    seed=st.integers(0, 2**32 - 1),
)
def test_stacked_total_variation_is_skimage_image_by_image_to_the_last_bit(
    images, chunk, weight, noise, max_iterations, seed
):
    """Images stop at different iterations (a constant image at once, others after up to 200
    steps), in any grouping into stacks: each comes out as skimage denoises it alone."""
    clean = strokes(images, seed % 1000)
    noisy = np.clip(noisy_version(clean, noise, seed), 0, 1).astype(np.float32)
    noisy[0] = 0.5 if images > 2 else noisy[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(classical, "TV_CHUNK", chunk)
        patch.setattr(classical, "TV_MAX_ITERATIONS", max_iterations)
        stacked = classical.total_variation(noisy, weight)
    expected = denoise_tv_chambolle(
        noisy.reshape(-1, 28, 28).astype(np.float64),
        weight=weight,
        channel_axis=0,
        max_num_iter=max_iterations,
    )
    assert np.array_equal(stacked, expected)


def test_probes_score_the_same_side_by_side_and_one_after_another(monkeypatch):
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 40)
    features = {
        name: (rng.normal(labels[:, None] * shift, 1.0, (120, 6)),) * 2
        for name, shift in (("close", 0.3), ("apart", 2.0))
    }
    monkeypatch.setattr(probe, "MIN_ROWS_FOR_WORKERS", 0)  # the workers, on this small data
    side_by_side = probe.probe_accuracies(features, labels, labels)
    monkeypatch.setattr(probe, "usable_cores", lambda: 1)
    assert probe.probe_accuracies(features, labels, labels) == side_by_side
    assert side_by_side["apart"] > side_by_side["close"]


KILLED_MID_PROBE = """
import sys, time
import numpy as np
from pipeline.evaluation import probe
rng = np.random.default_rng(0)
features = rng.random((20000, 300))
labels = rng.integers(0, 10, 20000)
pairs = {"a": (features, features[:100]), "b": (features, features[:100])}
with probe.probes_started(pairs, labels, labels[:100]) as scores:
    print("probing", flush=True)
    time.sleep(600)
"""


def test_a_stage_killed_outright_mid_probe_leaves_no_process_behind(monkeypatch):
    """SIGKILL gives the stage no chance to end its probe workers: they must die with it,
    busy or not, and the resource tracker with them."""
    import subprocess
    import sys

    import psutil

    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    stage = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_PROBE],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOKY_MAX_CPU_COUNT": "2"},
    )
    assert stage.stdout.readline() == "probing\n"
    helpers = psutil.Process(stage.pid).children(recursive=True)
    assert len(helpers) >= 2  # the workers (and multiprocessing's resource tracker)
    stage.kill()
    stage.wait()
    _, alive = psutil.wait_procs(helpers, timeout=120)
    assert alive == []
