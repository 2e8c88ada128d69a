"""Image-by-image work on both cores: the stacks cut into one part per core, results in order.

For per-image loops in Python or Cython (scikit-image's filters and SSIM take about a
millisecond per 28x28 image). Each image is processed on its own, so the joined result is the
array a single process computes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
from joblib import Parallel, delayed

# Below this, starting worker processes costs more than it saves.
MIN_IMAGES = 400


def per_image(
    function: Callable[..., np.ndarray], stacks: Sequence[np.ndarray], *args
) -> np.ndarray:
    """`function(*stacks, *args)`, computed on aligned parts of the stacks in parallel."""
    workers = os.cpu_count() or 1
    if workers == 1 or len(stacks[0]) < MIN_IMAGES:
        return function(*stacks, *args)
    cuts = [np.array_split(stack, workers) for stack in stacks]
    parts = Parallel(n_jobs=workers)(
        delayed(function)(*part, *args) for part in zip(*cuts, strict=True)
    )
    return np.concatenate(parts)
