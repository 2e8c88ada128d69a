"""The tutorial's script on the pipeline's data, in two variants:

    python benchmarks/tutorial_reference.py as-written   # the tutorial's script as written
    python benchmarks/tutorial_reference.py tuned        # the same, tuned for Keras 3

`as-written`: float64 inputs (the tutorial divides uint8 images by 255 into float64) and `fit`
with its default progress bar. `tuned`: float32 inputs and a silent `fit` (Keras 3 compiles the
step with XLA by default). Only the data loading differs from the tutorial: both read
`data/prepared/` and `data/noisy/` (what `dvc repro noise` wrote) instead of downloading MNIST, so
every side trains on the same images. Prints, as its last line, one JSON object: per-epoch losses
and seconds of both fits, and the script's wall time.
"""

import json
import sys
import time

started = time.perf_counter()
VARIANT = sys.argv[1] if len(sys.argv) > 1 else "as-written"
if VARIANT not in {"as-written", "tuned"}:
    raise SystemExit(f"variant {VARIANT!r}: as-written or tuned")
DTYPE, VERBOSE = ("float64", "auto") if VARIANT == "as-written" else ("float32", 0)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

X_train = np.load("data/prepared/x_train.npy").astype(DTYPE)
X_test = np.load("data/prepared/x_test.npy")[:100].astype(DTYPE)
X_train_noisy = np.load("data/noisy/x_train.npy").astype(DTYPE)
X_test_noisy = np.load("data/noisy/x_test.npy")[:100].astype(DTYPE)
tf.keras.utils.set_random_seed(0)


class EpochTimes(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


input_ = tf.keras.layers.Input(shape=(784,))
encoded = tf.keras.layers.Dense(64, activation="relu")(input_)
decoded = tf.keras.layers.Dense(784, activation="sigmoid")(encoded)
model = tf.keras.models.Model(inputs=input_, outputs=decoded)
model.compile(optimizer="adam", loss="binary_crossentropy")

clean_times = EpochTimes()
clean = model.fit(
    X_train, X_train, batch_size=64, epochs=10, verbose=VERBOSE, callbacks=[clean_times]
)

n = 5
encoder = tf.keras.models.Model(input_, encoded)
encoded_code = encoder.predict(X_test[:n], verbose=VERBOSE)
decoded_code = model.predict(X_test[:n], verbose=VERBOSE)
for images in (encoded_code.reshape(n, 4, 16), X_test[:n], decoded_code, X_train_noisy[:n]):
    plt.figure(figsize=(10, 2))
    for i in range(n):
        plt.subplot(1, n, i + 1).imshow(images[i].reshape(-1, images[i].shape[-1]), cmap="gray")
    plt.close("all")

noisy_times = EpochTimes()
noisy = model.fit(
    X_train_noisy, X_train, batch_size=64, epochs=10, verbose=VERBOSE, callbacks=[noisy_times]
)
model.predict(X_test_noisy[:n], verbose=VERBOSE)

print()  # after the progress bar
json.dump(
    {
        "basic_loss": clean.history["loss"],
        "basic_seconds": clean_times.seconds,
        "denoise_loss": noisy.history["loss"],
        "denoise_seconds": noisy_times.seconds,
        "wall_seconds": time.perf_counter() - started,
    },
    sys.stdout,
)
print()
