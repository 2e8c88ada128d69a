"""Image-by-image work on stacks of images: in chunks that keep temporaries small, or on every
core this process may use; results in order.

For per-image loops in Python or Cython (scikit-image's wavelet and non-local means take about a
millisecond per 28x28 image). The stacks are cut into one aligned part per usable core, and each
image is processed on its own, so the joined result is the array a single process computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import joblib
import numpy as np

# Below this, starting worker processes costs more than it saves.
MIN_IMAGES = 400


def usable_cores() -> int:
    """The cores this process may run on: CPU affinity (`taskset`), cgroup quotas (containers)
    and LOKY_MAX_CPU_COUNT all lower it; `os.cpu_count()` sees none of them."""
    return max(1, joblib.cpu_count())


def per_image(
    function: Callable[..., np.ndarray], stacks: Sequence[np.ndarray], *args
) -> np.ndarray:
    """`function(*stacks, *args)`, computed on aligned parts of the stacks in parallel."""
    workers = usable_cores()
    if workers == 1 or len(stacks[0]) < MIN_IMAGES:
        return function(*stacks, *args)
    cuts = [np.array_split(stack, workers) for stack in stacks]
    parts = joblib.Parallel(n_jobs=workers)(
        joblib.delayed(function)(*part, *args) for part in zip(*cuts, strict=True)
    )
    return np.concatenate(parts)


def in_chunks(
    function: Callable[..., np.ndarray], stacks: Sequence[np.ndarray], size: int, *args
) -> np.ndarray:
    """`function(*stacks, *args)`, computed on aligned chunks of at most `size` images, one after
    another (for vectorised work whose temporaries should stay small); an empty stack is one
    empty chunk."""
    starts = range(0, len(stacks[0]), size) or [0]
    parts = [
        function(*(stack[start : start + size] for stack in stacks), *args) for start in starts
    ]
    return np.concatenate(parts)
