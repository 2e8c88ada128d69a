"""Autoencoder architectures: `dense` (the tutorial's), `conv` and `vae`.

Every model maps flat images (N, 784) to flat images and has an `encoder` and a `decoder`
sub-model, so training, saving, MLflow logging and evaluation treat all kinds alike.
"""

from __future__ import annotations

import keras
import numpy as np

from pipeline.data.images import IMAGE_PIXELS, IMAGE_SIDE
from pipeline.modelling.variational import VariationalCode

LOSS = "binary_crossentropy"
KINDS = ("dense", "conv", "vae")
VAE_HIDDEN_UNITS = 256
L = keras.layers


def build_autoencoder(encoding_dim: int, kind: str = "dense", seed: int = 0) -> keras.Model:
    """`seed` seeds the VAE's sampling noise; weights follow the global seed."""
    builders = {"dense": _dense, "conv": _conv, "vae": _vae}
    encoder, decoder, code_layer = builders[kind](encoding_dim, seed)
    images = keras.Input((IMAGE_PIXELS,), name="image")
    code = encoder(images)
    if code_layer is not None:
        code = code_layer(code)
    return keras.Model(images, decoder(code), name=f"{kind}_autoencoder")


def _dense(encoding_dim: int, seed: int) -> tuple[keras.Model, keras.Model, None]:
    """The tutorial's: Dense(encoding_dim, relu) encoder, Dense(784, sigmoid) decoder."""
    encoder = keras.Sequential(
        [keras.Input((IMAGE_PIXELS,)), L.Dense(encoding_dim, activation="relu")], name="encoder"
    )
    decoder = keras.Sequential(
        [keras.Input((encoding_dim,)), L.Dense(IMAGE_PIXELS, activation="sigmoid")], name="decoder"
    )
    return encoder, decoder, None


def _conv(encoding_dim: int, seed: int) -> tuple[keras.Model, keras.Model, None]:
    """Two strided convolutions (28 -> 14 -> 7) into a dense code, mirrored back."""
    encoder = keras.Sequential(
        [
            keras.Input((IMAGE_PIXELS,)),
            L.Reshape((IMAGE_SIDE, IMAGE_SIDE, 1)),
            L.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            L.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            L.Flatten(),
            L.Dense(encoding_dim),
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((encoding_dim,)),
            L.Dense(7 * 7 * 64, activation="relu"),
            L.Reshape((7, 7, 64)),
            L.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu"),
            L.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu"),
            L.Conv2D(1, 3, padding="same", activation="sigmoid"),
            L.Flatten(),
        ],
        name="decoder",
    )
    return encoder, decoder, None


def _vae(encoding_dim: int, seed: int) -> tuple[keras.Model, keras.Model, keras.layers.Layer]:
    """Dense encoder to (mean, log variance) of the code; the mean is the code."""
    images = keras.Input((IMAGE_PIXELS,))
    hidden = L.Dense(VAE_HIDDEN_UNITS, activation="relu")(images)
    mean = L.Dense(encoding_dim, name="code_mean")(hidden)
    log_var = L.Dense(encoding_dim, name="code_log_var")(hidden)
    encoder = keras.Model(images, [mean, log_var], name="encoder")
    decoder = keras.Sequential(
        [
            keras.Input((encoding_dim,)),
            L.Dense(VAE_HIDDEN_UNITS, activation="relu"),
            L.Dense(IMAGE_PIXELS, activation="sigmoid"),
        ],
        name="decoder",
    )
    return encoder, decoder, VariationalCode(seed=seed, name="variational_code")


def random_states(model: keras.Model) -> list[keras.Variable]:
    """State of the sampling noise generators, which `model.weights` does not include."""
    layers = [model]
    states = []
    while layers:
        layer = layers.pop()
        layers.extend(getattr(layer, "layers", []))
        if isinstance(layer, VariationalCode):
            states.append(layer.seed_generator.state)
    return states


def kind_of(model: keras.Model) -> str:
    return model.name.removesuffix("_autoencoder")


def uses_xla(kind: str) -> bool:
    """XLA makes the dense models' training loop faster, but convolutions ~10x slower on CPU."""
    return kind != "conv"


def encoder_of(model: keras.Model) -> keras.Model:
    """Images -> codes (for the VAE, the mean of the code distribution)."""
    encoder = model.get_layer("encoder")
    if kind_of(model) != "vae":
        return encoder
    images = keras.Input((IMAGE_PIXELS,))
    return keras.Model(images, encoder(images)[0], name="code_mean")


def decoder_of(model: keras.Model) -> keras.Model:
    return model.get_layer("decoder")


def compile_for_training(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=LOSS)
    return model


def predict(model: keras.Model, inputs: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Outputs for `inputs`, in batches; plain calls, without `predict`'s tf.data machinery."""
    if not len(inputs):
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(model(inputs[start : start + batch_size], training=False))
            for start in range(0, len(inputs), batch_size)
        ]
    )
