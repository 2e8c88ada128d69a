"""The VAE's sampling layer, in a module that stands alone (Keras only): it is shipped with every
logged model, so a VAE loads where this project is not installed.

Keras finds a custom layer by its registered name (`aepipe>VariationalCode`), so whichever copy
of this module is imported registers it; registering it twice is harmless.
"""

from __future__ import annotations

import keras

PIXELS = 28 * 28  # MNIST's; the KL term is divided by it to match the per-pixel cross-entropy


@keras.saving.register_keras_serializable(package="aepipe")
class VariationalCode(keras.layers.Layer):
    """Reparameterisation: samples mean + sigma * eps while training, returns the mean otherwise.

    Adds the KL divergence to N(0, I), divided by the pixel count to match the per-pixel BCE.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mean, log_var = inputs
        kl = -0.5 * keras.ops.sum(
            1 + log_var - keras.ops.square(mean) - keras.ops.exp(log_var), axis=-1
        )
        self.add_loss(keras.ops.mean(kl) / PIXELS)
        if not training:
            return mean
        noise = keras.random.normal(keras.ops.shape(mean), seed=self.seed_generator)
        return mean + keras.ops.exp(0.5 * log_var) * noise

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}
