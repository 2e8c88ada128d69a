"""aepipe: a reproducible DVC + Keras + MLflow pipeline for autoencoders on MNIST."""

__version__ = "0.1.0"
