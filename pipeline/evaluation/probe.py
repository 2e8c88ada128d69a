"""Can the code replace the pixels? A linear probe: logistic regression on codes vs pixels."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MAX_ITER = 500


def probe_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
) -> float:
    """Test accuracy of a standardised logistic regression fitted on the training features.

    With a single digit among the training labels (a tiny training set), any classifier can only
    answer that digit; that is what is scored."""
    if len(np.unique(train_labels)) < 2:
        return float(np.mean(test_labels == train_labels[0]))
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))
    with warnings.catch_warnings():
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
    features of the same size, raw pixels. Can the code replace the pixels?"""
    return {
        name: probe_accuracy(train_x, train_labels, test_x, test_labels)
        for name, (train_x, test_x) in features.items()
    }
