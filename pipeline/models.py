"""Autoencoder architectures. Every model has an `encoder` and a `decoder` sub-model."""

from __future__ import annotations

import keras

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
