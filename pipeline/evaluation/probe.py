"""Can the code replace the pixels? A linear probe: logistic regression on codes vs pixels."""

from __future__ import annotations

import warnings

import joblib
import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from pipeline.evaluation.parallel import usable_cores

MAX_ITER = 500


def probe_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
) -> float:
    """Test accuracy of a standardised logistic regression fitted on the training features.

    With a single digit among the training labels (a tiny training set), any classifier can only
    answer that digit; that is what is scored.

    One BLAS thread: with two, OpenBLAS sums in another order (raw pixels: 0.9098 instead of
    0.9093, so the score would depend on the machine's core count) and, on 2 cores, takes twice
    as long (16 s against 8.8 s for the raw pixels)."""
    if len(np.unique(train_labels)) < 2:
        return float(np.mean(test_labels == train_labels[0]))
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))
    with warnings.catch_warnings(), threadpool_limits(1):
        # lbfgs may stop at MAX_ITER on raw pixels; the accuracy has settled long before.
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(train_features, train_labels)
        return float(classifier.score(test_features, test_labels))


def pca_features(
    train: np.ndarray,
    test: np.ndarray,
    components: int,
) -> tuple[np.ndarray, np.ndarray]:
    pca = PCA(n_components=components, random_state=0).fit(train)
    return pca.transform(train), pca.transform(test)


def probe_accuracies(
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    train_labels: np.ndarray,
    test_labels: np.ndarray,
) -> dict[str, float]:
    """Logistic-regression accuracy on each (train, test) feature pair: model codes, PCA
    features of the same size, raw pixels. Can the code replace the pixels? The probes run side
    by side, one per usable core; each is single-threaded, so the scores do not depend on how."""
    jobs = [
        joblib.delayed(probe_accuracy)(train_x, train_labels, test_x, test_labels)
        for train_x, test_x in features.values()
    ]
    workers = min(len(jobs), usable_cores())
    if workers > 1:
        accuracies = joblib.Parallel(n_jobs=workers)(jobs)
    else:
        accuracies = [function(*args) for function, args, _ in jobs]
    return dict(zip(features, accuracies, strict=True))
