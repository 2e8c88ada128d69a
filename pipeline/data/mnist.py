"""What MNIST is: the published arrays, by their sha256. Every source must yield exactly these,
so `data/raw/` has the same bytes and the same DVC hash everywhere; `prepare` checks them again."""

from __future__ import annotations

import hashlib

import numpy as np

from pipeline.core.errors import DataError
from pipeline.data.arrays import check_array
from pipeline.data.images import RAW_SPECS

# sha256 of each array's `.tobytes()` (uint8, images 28x28): the published MNIST.
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}


def verify_mnist(arrays: dict[str, np.ndarray], origin: str) -> None:
    """Raise DataError unless `arrays` are exactly the published MNIST arrays."""
    for name, spec in RAW_SPECS.items():
        if name not in arrays:
            raise DataError(f"{origin}: no array named {name!r}")
        check_array(arrays[name], spec, f"{origin}:{name}")
        actual = hashlib.sha256(arrays[name].tobytes()).hexdigest()
        if actual != MNIST_SHA256[name]:
            raise DataError(
                f"{origin}:{name}: sha256 {actual[:12]}… differs from MNIST's "
                f"{MNIST_SHA256[name][:12]}… (corrupted or not MNIST)"
            )
