"""The model MLflow logs and serves: the exact `.keras` file a training stage wrote, behind
MLflow's pyfunc interface (images in, images out).

MLflow stores this file with each logged model and runs it when the model is loaded
(`mlflow.pyfunc.load_model`, `mlflow models serve`), together with `variational.py`, so a
registered model works where this project is not installed: it needs TensorFlow, Keras, NumPy
and MLflow only. It is never imported by the pipeline.

Keras is imported when the model is loaded, not when this file runs: MLflow runs it to check it
when the model is logged, in the process that logs (`tracking/recorder.py`), which has no use for
TensorFlow's import of several seconds.
"""

import mlflow.models
import numpy as np
from mlflow.pyfunc.model import PythonModel


class KerasAutoencoder(PythonModel):
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

        images = checked_images(model_input)
        return keras.ops.convert_to_numpy(self.model(images, training=False))


def checked_images(model_input) -> np.ndarray:
    """The input as (N, 784) float32 pixels in [0, 1], or an MLflow error that the scoring
    server answers with HTTP 400 and this message (a NaN would otherwise come back as bare
    `NaN`, which is not JSON, and an image scaled 0-255 as confident nonsense)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    def refuse(problem: str) -> MlflowException:
        return MlflowException(
            f"{problem}; expected flat 28x28 images, 784 pixels each in [0, 1]",
            error_code=INVALID_PARAMETER_VALUE,
        )

    try:
        images = np.asarray(model_input, dtype=np.float32)
    except (TypeError, ValueError):
        raise refuse("the input is not an array of numbers") from None
    if images.size == 0 or images.size % 784:
        raise refuse(f"the input has {images.size} values, not a multiple of 784")
    images = images.reshape(-1, 784)
    for rows, problem in (
        (~np.isfinite(images).all(axis=1), "NaN or infinite pixels"),
        (((images < 0) | (images > 1)).any(axis=1), "pixels outside [0, 1] (scale 0-255 by 1/255)"),
    ):
        if rows.any():
            first = int(np.flatnonzero(rows)[0])
            raise refuse(f"{int(rows.sum())} image(s), the first at row {first}, hold {problem}")
    return images


mlflow.models.set_model(KerasAutoencoder())
