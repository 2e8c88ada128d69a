"""Every params file `validate` accepts runs to the end; the rest are refused in one line.

Hypothesis draws params from the schema's own ranges (sizes kept tiny, so that each example runs
in about a second; the full sizes run end to end elsewhere) and runs the stages' pure cores on
synthetic digits: prepare, noise, baselines, training, evaluate.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline.core.config import parse_params
from pipeline.core.errors import ParamsError, TrainingDiverged
from pipeline.data.images import NOISY_ARRAYS, NoisySplit
from pipeline.data.noise import noisy_copies
from pipeline.data.preparation import prepare_split
from pipeline.evaluation.autoencoders import Autoencoders, evaluate_autoencoders
from pipeline.evaluation.baselines import score_baselines
from tests.conftest import default_params, merge

RAW_TRAIN, RAW_TEST = 80, 24


def synthetic_raw() -> dict[str, np.ndarray]:
    """Digit-like images: a bright bar whose position depends on the label."""
    rng = np.random.default_rng(0)

    def images(labels):
        stack = np.zeros((len(labels), 28, 28), np.uint8)
        for image, label, jitter in zip(
            stack, labels, rng.integers(0, 3, len(labels)), strict=True
        ):
            image[4 + 2 * label + jitter : 7 + 2 * label + jitter, 5:23] = 255
        return stack

    y_train = (np.arange(RAW_TRAIN) * 7 % 10).astype(np.uint8)
    y_test = (np.arange(RAW_TEST) * 3 % 10).astype(np.uint8)
    return {
        "x_train": images(y_train),
        "y_train": y_train,
        "x_test": images(y_test),
        "y_test": y_test,
    }


RAW = synthetic_raw()
finite = {"allow_nan": False, "allow_infinity": False}


@st.composite
def params_from_the_schema(draw, valid: bool = False) -> dict:
    """Raw params in the schema's ranges, edges included, sizes capped to the synthetic data.
    `valid`: within the rules across keys too, and learning rates spread over their decades."""
    train_size = draw(st.integers(1, RAW_TRAIN - 10))
    test_size = draw(st.integers(1, RAW_TEST))
    upto_train = st.integers(1, train_size) if valid else st.integers(1, 64)
    positive = {"min_value": 1e-3 if valid else 0.0, "max_value": 5.0, **finite}

    def training() -> dict:
        rate = 10 ** draw(st.floats(-5, 6)) if valid else draw(st.floats(0.0, 1e6, **finite))
        return {
            "epochs": draw(st.integers(1, 2)),
            "batch_size": draw(upto_train),
            "learning_rate": rate,
        }

    return merge(
        default_params(),
        {
            "seed": draw(st.integers(0, 2**31 - 1)),
            "data": {
                "train_size": train_size,
                "test_size": test_size,
                "tuning_size": draw(st.integers(1, 10)),
            },
            "noise": {
                "factor": draw(st.floats(**positive)),
                "seed": draw(st.integers(0, 2**31 - 1)),
            },
            "model": {
                "kind": draw(st.sampled_from(["dense", "conv", "vae"])),
                "encoding_dim": draw(
                    st.integers(1, train_size)
                    if valid
                    else st.one_of(upto_train, st.integers(1, 784))
                ),
            },
            "train_basic": training(),
            "train_denoise": {
                **training(),
                "init_from": draw(st.sampled_from(["basic", "scratch"])),
            },
            "evaluate": {
                "n_examples": draw(st.integers(1, min(test_size, 20) if valid else 20)),
                "robustness_factors": draw(
                    st.lists(st.floats(**positive), min_size=1, max_size=3, unique=True).map(sorted)
                    if valid
                    else st.lists(st.floats(**positive), min_size=1, max_size=3)
                ),
                "robustness_size": draw(st.integers(1, 30)),
            },
        },
    )


def accepted(raw: dict):
    """The validated params, or None after checking the refusal is one line."""
    try:
        params = parse_params(raw)
    except ParamsError as refusal:
        assert "\n" not in str(refusal) and str(refusal).startswith("params.yaml: ")
        event("refused by validate")
        return None
    event("accepted")
    return params


def data_for(params):
    split = prepare_split(
        RAW, params.data.train_size, params.data.test_size, params.data.tuning_size
    )
    noisy = noisy_copies(split, params.noise.factor, params.noise.seed)
    return split, NoisySplit(*(noisy[name] for name in NOISY_ARRAYS))


def assert_finished(params, split, evaluation) -> None:
    json.dumps(evaluation.metrics, allow_nan=False)  # what metrics.json must hold
    assert np.isfinite([row["psnr"] for row in evaluation.table]).all()
    assert len(evaluation.robustness) == len(params.evaluate.robustness_factors)
    expected = {"codes", "reconstructions", "denoised", "code_map", "loss_curves", "robustness"}
    assert expected <= set(evaluation.figures)
    import matplotlib.pyplot as plt

    for figure in evaluation.figures.values():
        figure.canvas.draw()  # what saving does: a figure that cannot be drawn fails here
        plt.close(figure)


def numpy_autoencoders(kind: str, dim: int) -> Autoencoders:
    """Stand-ins with the models' shapes and ranges, for the parts that need no training."""
    projection = np.random.default_rng(dim).standard_normal((784, dim)).astype(np.float32)
    return Autoencoders(
        kind=kind,
        reconstruct=lambda images: np.clip(images * 0.9 + 0.05, 0, 1),
        denoise=lambda images: np.clip(images * 0.8, 0, 1),
        encode_basic=lambda images: images @ projection,
        encode_denoiser=lambda images: np.maximum(images @ projection, 0),
        decode_basic=lambda codes: np.full((len(codes), 784), 0.5, np.float32),
    )


HISTORIES = {"train_basic": [(1, 0.3, 0.25)], "train_denoise": [(1, 0.2, 0.18)]}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(params_from_the_schema(), params_from_the_schema(valid=True)))
def test_accepted_params_run_prepare_noise_baselines_and_evaluate_to_the_end(raw):
    params = accepted(raw)
    if params is None:
        return
    split, noisy = data_for(params)
    reference = score_baselines(params, split, noisy)
    json.dumps(
        {
            "table": reference.table,
            "noisy": reference.noisy_input,
            "probe": reference.probe_accuracy,
        },
        allow_nan=False,
    )
    models = numpy_autoencoders(params.model.kind, params.model.encoding_dim)
    evaluation = evaluate_autoencoders(params, split, noisy, reference, models, HISTORIES)
    assert_finished(params, split, evaluation)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=params_from_the_schema(valid=True))
def test_accepted_params_train_real_models_to_the_end(raw):
    """The training core on drawn params (what evaluate then does with any model is the test
    above). Divergence (NaN, inf or an exploding loss, e.g. at learning_rate 1e6) is the one
    outcome validate cannot foresee: it depends on the data and the optimiser's path. It must
    stop the run in one line after the first bad epoch."""
    keras = pytest.importorskip("keras")
    from pipeline.modelling import architectures as nets
    from pipeline.modelling import training

    params = accepted(raw)
    if params is None:
        return
    split, noisy = data_for(params)

    def fit(model, inputs, val_inputs, settings):
        return training.fit(
            model,
            inputs,
            split.x_train,
            val_inputs,
            split.x_test,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            seed=params.seed,
            jit_compile=nets.uses_xla(params.model.kind),
        )

    training.enable_determinism(params.seed)
    build = lambda rate: nets.compile_for_training(  # noqa: E731
        nets.build_autoencoder(params.model.encoding_dim, params.model.kind, params.seed), rate
    )
    try:
        basic = build(params.train_basic.learning_rate)
        fit(basic, split.x_train, split.x_test, params.train_basic)
        if params.train_denoise.init_from == "basic":
            denoiser = keras.models.clone_model(basic)
            denoiser.set_weights(basic.get_weights())
            nets.compile_for_training(denoiser, params.train_denoise.learning_rate)
        else:
            denoiser = build(params.train_denoise.learning_rate)
        history = fit(denoiser, noisy.x_train, noisy.x_test, params.train_denoise)
    except TrainingDiverged as stopped:
        assert "\n" not in str(stopped) and "lower the learning rate" in str(stopped)
        return
    assert [row.epoch for row in history] == list(range(1, params.train_denoise.epochs + 1))
    denoised = nets.predict(denoiser, noisy.x_test)
    codes = nets.predict(nets.encoder_of(basic), split.x_test)
    assert denoised.shape == split.x_test.shape and np.isfinite(denoised).all()
    assert codes.shape == (len(split.x_test), params.model.encoding_dim)
