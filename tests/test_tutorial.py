"""The default params reproduce the tutorial's loss table (../shared/seed) on real MNIST."""

import pytest

from pipeline.core.config import load_params
from pipeline.data.noise import noisy_copies
from pipeline.data.preparation import prepare_split
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e  # real MNIST, trained as the tutorial does (about 20 s)

training = pytest.importorskip("pipeline.modelling.training")
models = pytest.importorskip("pipeline.modelling.architectures")

TUTORIAL_BASIC = [0.2034, 0.1229, 0.1013, 0.0900, 0.0836, 0.0801, 0.0780, 0.0767, 0.0758, 0.0752]
TUTORIAL_DENOISE = [0.1071, 0.1015, 0.1003, 0.0997, 0.0994, 0.0991, 0.0989, 0.0988, 0.0986, 0.0985]
TOLERANCE = 0.003


def test_default_params_reproduce_the_tutorial_losses(mnist):
    params = load_params(REPO_ROOT / "params.yaml")
    split = prepare_split(
        mnist, params.data.train_size, params.data.test_size, params.data.tuning_size
    )
    noisy = noisy_copies(split, params.noise.factor, params.noise.seed)
    training.enable_determinism(params.seed)
    model = models.compile_for_training(
        models.build_autoencoder(params.model.encoding_dim), params.train_basic.learning_rate
    )

    def fit(inputs, val_inputs, settings):
        return [
            r.loss
            for r in training.fit(
                model,
                inputs,
                split.x_train,
                val_inputs,
                split.x_test,
                epochs=settings.epochs,
                batch_size=settings.batch_size,
                seed=params.seed,
            )
        ]

    basic = fit(split.x_train, split.x_test, params.train_basic)
    model.optimizer.learning_rate.assign(params.train_denoise.learning_rate)
    denoise = fit(noisy["x_train"], noisy["x_test"], params.train_denoise)  # the same model
    assert max(abs(a - b) for a, b in zip(basic, TUTORIAL_BASIC, strict=True)) < TOLERANCE
    assert max(abs(a - b) for a, b in zip(denoise, TUTORIAL_DENOISE, strict=True)) < TOLERANCE
