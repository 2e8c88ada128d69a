"""aepipe: a reproducible DVC + Keras + MLflow pipeline for autoencoders on MNIST.

Sub-packages, each importing only those listed before it: `core` (params schema, paths, errors,
file helpers), `data` (MNIST, array files, splits, noise), `artifacts` (the files stages hand each
other), `evaluation` (metrics, classical baselines, probes, figures) and `modelling`
(TensorFlow: networks and training), `tracking` (MLflow), `audit` and `ops` (commands for users and
operators), `stages` (one thin module per DVC stage). Only `cli` imports a stage.
"""
