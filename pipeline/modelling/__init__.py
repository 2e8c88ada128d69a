"""The networks and how they are trained.

`architectures`, `training`, `distributed` and `model_files` import TensorFlow and Keras
(seconds of CPU), so stages import them only after params and data have been checked. `workers`
(starting the processes of multi-worker training, which must happen before TensorFlow loads)
and `checkpoints` do not import it. `variational` (the VAE's layer) and `served` (the logged model's
loader, which imports Keras only when a model loads) stand alone, as MLflow ships them with every
logged model.
"""
