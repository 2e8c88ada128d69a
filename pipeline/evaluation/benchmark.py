"""What a denoiser's test score is measured on. Scores are comparable only within one benchmark:
the same test images, the same noise (factor, seed, and the way it is drawn) and the same score."""

from __future__ import annotations

from pipeline.core.config import Params

# What defines a benchmark besides its params; bump it when any of these changes: the test images
# (the first data.test_size of MNIST's test set, scaled by /255), how the noise is drawn (2: one
# stream per split; 1: one generator for train, test and tuning in turn), and the score (PSNR of
# each image, data range 1, capped at 100 dB, averaged).
BENCHMARK_VERSION = 2
SCORE = "denoiser_on_noisy.psnr"
NOISY_SCORE = "noisy_input.psnr"  # the same score of the noisy input itself: doing nothing


def benchmark_name(params: Params) -> str:
    """E.g. `noise0_4-seed1-test10000-v2`: the noise factor exactly (the shortest text that reads
    back as the same number), its seed, the test images and the version; letters, digits, `_`
    and `-` only, as MLflow's aliases require."""
    name = (
        f"noise{params.noise.factor!r}-seed{params.noise.seed}-test{params.data.test_size}"
        f"-v{BENCHMARK_VERSION}"
    )
    return name.replace(".", "_")
