"""The tutorial's script, as written there (plain Keras `model.fit`), on the pipeline's data.

Only the data loading differs: it reads `data/prepared/` and `data/noisy/` (what `dvc repro noise`
wrote) instead of downloading MNIST, so both sides train on identical arrays. Prints one JSON
line: per-epoch losses and seconds of both fits, and the script's wall time.
"""

import json
import sys
import time

started = time.perf_counter()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

X_train = np.load("data/prepared/x_train.npy")
X_test = np.load("data/prepared/x_test.npy")[:100]
X_train_noisy = np.load("data/noisy/x_train.npy")
X_test_noisy = np.load("data/noisy/x_test.npy")[:100]
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
clean = model.fit(X_train, X_train, batch_size=64, epochs=10, verbose=0, callbacks=[clean_times])

n = 5
encoder = tf.keras.models.Model(input_, encoded)
encoded_code = encoder.predict(X_test[:n], verbose=0)
decoded_code = model.predict(X_test[:n], verbose=0)
for images in (encoded_code.reshape(n, 4, 16), X_test[:n], decoded_code, X_train_noisy[:n]):
    plt.figure(figsize=(10, 2))
    for i in range(n):
        plt.subplot(1, n, i + 1).imshow(images[i].reshape(-1, images[i].shape[-1]), cmap="gray")
    plt.close("all")

noisy_times = EpochTimes()
noisy = model.fit(
    X_train_noisy, X_train, batch_size=64, epochs=10, verbose=0, callbacks=[noisy_times]
)
model.predict(X_test_noisy[:n], verbose=0)

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
