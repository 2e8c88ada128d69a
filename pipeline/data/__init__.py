"""The data: MNIST from a verified source, array files checked on load, the train / test /
tuning splits, and the seeded noise. NumPy only: nothing here imports TensorFlow."""
