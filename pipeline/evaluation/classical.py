"""Classical denoisers to measure the autoencoders against, each tuned off the test set.

Each baseline has one parameter, chosen from a small grid by mean PSNR on held-out noisy
training images (`data/noisy/x_tuning.npy`), never on the test images it is then scored on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from skimage.filters import gaussian, median
from skimage.restoration import denoise_nl_means, denoise_wavelet
from sklearn.decomposition import PCA

from pipeline.data.images import IMAGE_SIDE
from pipeline.evaluation import parallel
from pipeline.evaluation.metrics import mean_psnr


def _as_images(flat: np.ndarray) -> np.ndarray:
    return flat.reshape(-1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float64)


def gaussian_filter(noisy: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian(_as_images(noisy), sigma=sigma, channel_axis=0)


def median_filter(noisy: np.ndarray, size: float) -> np.ndarray:
    """A `size` x `size` median (`size` a whole number, as the grid holds it)."""
    side = int(size)
    return median(_as_images(noisy), footprint=np.ones((1, side, side), bool))


TV_CHUNK = 128  # images per stack: its arrays stay in cache (4x skimage's loop; 2000: 2x)
TV_EPS, TV_MAX_ITERATIONS = 2.0e-4, 200  # skimage's defaults


def total_variation(noisy: np.ndarray, weight: float) -> np.ndarray:
    """skimage's `denoise_tv_chambolle(..., channel_axis=0)`, to the last bit, on stacks."""
    return parallel.in_chunks(chambolle_stack, [_as_images(noisy)], TV_CHUNK, weight)


def chambolle_stack(images: np.ndarray, weight: float) -> np.ndarray:
    """Chambolle's total-variation denoising of each image of the stack: skimage's
    `_denoise_tv_chambolle_nd` on each 2-D image, every step done for all images at once. An
    image leaves the stack when its energy settles (skimage's per-image stopping rule)."""
    n, height, width = images.shape
    result = np.empty_like(images)
    active = np.arange(n)
    p = np.zeros((2, n, height, width))  # the dual field, one plane per axis
    g = np.zeros_like(p)  # differences of `out` along each axis; the last row/column stays 0
    d = np.zeros_like(images)
    tau = 0.25  # 1 / (2 * ndim)
    out = images  # the first step differentiates the images themselves
    for i in range(TV_MAX_ITERATIONS):
        if i > 0:
            d = -p.sum(0)
            d[:, 1:, :] += p[0, :, :-1, :]
            d[:, :, 1:] += p[1, :, :, :-1]
            out = images + d
        energy = (d**2).reshape(len(d), height * width).sum(axis=1)
        g[0, :, :-1, :] = np.diff(out, axis=1)
        g[1, :, :, :-1] = np.diff(out, axis=2)
        norm = np.sqrt((g**2).sum(axis=0))
        energy += weight * norm.reshape(len(norm), height * width).sum(axis=1)
        norm *= tau / weight
        norm += 1.0
        p -= tau * g
        p /= norm
        energy /= float(height * width)
        if i == 0:
            initial = previous = energy
            continue
        done = np.abs(previous - energy) < TV_EPS * initial
        if done.any():
            result[active[done]] = out[done]
            going = ~done
            if not going.any():
                return result
            active, images, p, g = active[going], images[going], p[:, going], g[:, going]
            initial, energy, out = initial[going], energy[going], out[going]
        previous = energy
    result[active] = out
    return result


def wavelet(noisy: np.ndarray, sigma: float) -> np.ndarray:
    return denoise_wavelet(_as_images(noisy), sigma=sigma, channel_axis=0, rescale_sigma=True)


def non_local_means(noisy: np.ndarray, h: float) -> np.ndarray:
    return np.stack(
        [
            denoise_nl_means(image, h=h, patch_size=3, patch_distance=5, fast_mode=True)
            for image in _as_images(noisy)
        ]
    )


def in_parallel(denoise: Callable[[np.ndarray, float], np.ndarray]):
    """`denoise` on every usable core (see `parallel.per_image`): the same array, sooner."""

    def run(noisy: np.ndarray, value: float) -> np.ndarray:
        return parallel.per_image(denoise, [noisy], value)

    return run


@dataclass(frozen=True)
class Baseline:
    name: str
    parameter: str
    grid: Sequence[float]
    denoise: Callable[[np.ndarray, float], np.ndarray]

    def __call__(self, noisy: np.ndarray, value: float) -> np.ndarray:
        return np.clip(self.denoise(noisy, value), 0, 1).reshape(len(noisy), -1)


FILTERS = (
    Baseline("gaussian", "sigma", (0.5, 0.7, 0.9, 1.2, 1.5), gaussian_filter),
    Baseline("median", "size", (3, 5), median_filter),
    Baseline(
        "total_variation", "weight", (0.05, 0.1, 0.15, 0.2, 0.3), in_parallel(total_variation)
    ),
    Baseline("wavelet", "sigma", (0.1, 0.2, 0.3, 0.4), in_parallel(wavelet)),
    Baseline("non_local_means", "h", (0.1, 0.15, 0.2, 0.3), in_parallel(non_local_means)),
)


def pca_baseline(clean_train: np.ndarray, components: int) -> Baseline:
    """Project onto the first `components` principal components of clean training images."""
    pca = PCA(n_components=components, random_state=0).fit(clean_train)

    def project(noisy: np.ndarray, _: float) -> np.ndarray:
        return pca.inverse_transform(pca.transform(noisy))

    return Baseline("pca", "components", (components,), project)


def tune(baseline: Baseline, noisy: np.ndarray, clean: np.ndarray) -> float:
    """The grid value with the best mean PSNR on these (held-out) images."""
    scores = {value: mean_psnr(clean, baseline(noisy, value)) for value in baseline.grid}
    return max(scores, key=lambda value: scores[value])
