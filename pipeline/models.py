"""Autoencoder architectures. Every model has an `encoder` and a `decoder` sub-model."""

from __future__ import annotations

import keras
import numpy as np

from pipeline.datasets import IMAGE_PIXELS

LOSS = "binary_crossentropy"


def build_autoencoder(encoding_dim: int) -> keras.Model:
    """The tutorial's model: Dense(encoding_dim, relu) encoder, Dense(784, sigmoid) decoder."""
    encoder = keras.Sequential(
        [keras.Input((IMAGE_PIXELS,)), keras.layers.Dense(encoding_dim, activation="relu")],
        name="encoder",
    )
    decoder = keras.Sequential(
        [keras.Input((encoding_dim,)), keras.layers.Dense(IMAGE_PIXELS, activation="sigmoid")],
        name="decoder",
    )
    images = keras.Input((IMAGE_PIXELS,), name="image")
    return keras.Model(images, decoder(encoder(images)), name="autoencoder")


def encoder_of(model: keras.Model) -> keras.Model:
    return model.get_layer("encoder")


def compile_for_training(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=LOSS)
    return model


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Outputs for `images`, in batches; plain calls, without `predict`'s tf.data machinery."""
    return (
        np.concatenate(
            [
                keras.ops.convert_to_numpy(
                    model(images[start : start + batch_size], training=False)
                )
                for start in range(0, len(images), batch_size)
            ]
        )
        if len(images)
        else np.zeros((0, *model.output_shape[1:]), np.float32)
    )
