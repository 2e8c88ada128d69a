"""The model MLflow logs and serves: the exact `.keras` file a training stage wrote, behind
MLflow's pyfunc interface (images in, images out).

MLflow stores this file with each logged model and runs it when the model is loaded
(`mlflow.pyfunc.load_model`, `mlflow models serve`), together with `variational.py`, so a
registered model works where this project is not installed: it needs TensorFlow, Keras, NumPy
and MLflow only. It is never imported by the pipeline.

Keras is imported when the model is loaded, not when this file runs: MLflow runs it to check it
when the model is logged, in the process that logs (`tracking/recorder.py`), which has no use for
TensorFlow's 7 s import.
"""

import mlflow
import numpy as np


class KerasAutoencoder(mlflow.pyfunc.PythonModel):
    """Flat 28x28 images in [0, 1] (N, 784) -> the autoencoder's output images (N, 784)."""

    def load_context(self, context):
        import keras

        try:
            import variational  # registers the VAE's layer with Keras
        except ImportError:  # loaded inside the project
            from pipeline.modelling import variational  # noqa: F401

        self.model = keras.saving.load_model(
            context.artifacts["keras_model"], compile=False, safe_mode=True
        )

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        import keras

        images = np.asarray(model_input, dtype=np.float32).reshape(-1, 28 * 28)
        return keras.ops.convert_to_numpy(self.model(images, training=False))


mlflow.models.set_model(KerasAutoencoder())
