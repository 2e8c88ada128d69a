"""Can the code replace the pixels? A linear probe: logistic regression on codes vs pixels."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from pipeline.core import processes
from pipeline.evaluation.parallel import usable_cores

MAX_ITER = 500
# Below this many training rows a probe takes well under a second, less than starting a worker
# process (about one second of imports): the probes then run in this process.
MIN_ROWS_FOR_WORKERS = 4000


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
    features of the same size, raw pixels. Can the code replace the pixels?"""
    with probes_started(features, train_labels, test_labels) as accuracies:
        return accuracies()


@contextlib.contextmanager
def probes_started(
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    train_labels: np.ndarray,
    test_labels: np.ndarray,
) -> Iterator[Callable[[], dict[str, float]]]:
    """`probe_accuracies`, started in the background: the probes run in worker processes, one
    per usable core, while the caller goes on; the yielded function waits for their scores.
    Each probe is single-threaded, so the scores do not depend on where or beside what it ran.
    With one usable core, or little data, the probes run when their scores are asked for."""
    arguments = [
        (train_x, train_labels, test_x, test_labels) for train_x, test_x in features.values()
    ]
    workers = min(len(arguments), usable_cores())
    if workers < 2 or len(train_labels) < MIN_ROWS_FOR_WORKERS:
        yield lambda: dict(zip(features, (probe_accuracy(*a) for a in arguments), strict=True))
        return
    context = multiprocessing.get_context("spawn")  # not fork: BLAS and joblib threads run here
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_tied_to_parent, initargs=(os.getpid(),)
    )
    try:
        futures = [pool.submit(probe_accuracy, *a) for a in arguments]
        yield lambda: dict(zip(features, (f.result() for f in futures), strict=True))
    except BaseException:  # Ctrl-C or an error: do not wait up to 9 s for a probe
        for worker in list(pool._processes.values()):  # the workers this pool started
            worker.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _tied_to_parent(stage: int) -> None:
    """In each probe worker: ignore Ctrl-C (the stage handles it and ends the workers), and die
    with the stage if it is killed outright, rather than linger."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    processes.die_with_parent(stage)
