"""Figures: the tutorial's four image grids and the loss curves. Pure: arrays in, Figure out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from pipeline.core.files import atomic_path
from pipeline.data.images import IMAGE_SIDE

# No version string in the PNG, so a matplotlib upgrade alone does not change the file's md5.
PNG_METADATA = {"Software": None}


def code_image_shape(encoding_dim: int) -> tuple[int, int]:
    """The tutorial draws a 64-number code as a 4x16 image; other sizes get up to 4 rows."""
    rows = max(r for r in range(1, 5) if encoding_dim % r == 0)
    return rows, encoding_dim // rows


def _show(ax: plt.Axes, image: np.ndarray, title: str | None = None) -> None:
    ax.imshow(image, cmap="gray")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def code_grid(codes: np.ndarray) -> Figure:
    """Each code drawn as an image, as the tutorial does (`reshape(4, 16).T`)."""
    rows, cols = code_image_shape(codes.shape[1])
    fig, axes = plt.subplots(1, len(codes), figsize=(2 * len(codes), 4), squeeze=False)
    for ax, code in zip(axes[0], codes, strict=True):
        _show(ax, code.reshape(rows, cols).T)
    fig.suptitle(f"{codes.shape[1]}-number codes of the first test images")
    return fig


def mosaic(images: np.ndarray, columns: int, gap: int = 2) -> np.ndarray:
    """Flat 28x28 images tiled in rows of `columns`, with white gaps: one array to draw at once
    (one axes per image costs a quarter of a second per figure row)."""
    rows = -(-len(images) // columns)
    cell = IMAGE_SIDE + gap
    tiled = np.ones((rows * cell - gap, columns * cell - gap), np.float32)
    for index, image in enumerate(images):
        top, left = (index // columns) * cell, (index % columns) * cell
        tiled[top : top + IMAGE_SIDE, left : left + IMAGE_SIDE] = image.reshape(
            IMAGE_SIDE, IMAGE_SIDE
        )
    return tiled


def image_rows(rows: Mapping[str, np.ndarray]) -> Figure:
    """One row of 28x28 images per entry, e.g. originals above reconstructions; grey levels on
    one scale, 0 black to 1 white."""
    n = len(next(iter(rows.values())))
    fig, axes = plt.subplots(len(rows), 1, figsize=(2 * n, 2.1 * len(rows)), squeeze=False)
    for (ax,), (label, images) in zip(axes, rows.items(), strict=True):
        ax.imshow(mosaic(images, n), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(label, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def loss_curves(histories: Mapping[str, Sequence[tuple[int, float, float]]]) -> Figure:
    """Training and validation loss per epoch, one panel per training stage."""
    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.5), squeeze=False)
    for ax, (stage, rows) in zip(axes[0], histories.items(), strict=True):
        epochs, loss, val_loss = zip(*rows, strict=True)
        ax.plot(epochs, loss, marker="o", label="loss")
        ax.plot(epochs, val_loss, marker="o", label="val_loss")
        ax.set(title=stage, xlabel="epoch", ylabel="binary cross-entropy")
        ax.legend()
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata=PNG_METADATA)
    plt.close(fig)


def image_grid(images: np.ndarray, columns: int, title: str) -> Figure:
    """Flat 28x28 images in a grid, e.g. samples decoded from a VAE's prior."""
    rows = -(-len(images) // columns)
    fig, ax = plt.subplots(figsize=(columns, rows + 0.4))
    ax.imshow(mosaic(images, columns), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def denoiser_scores(rows: Sequence[Mapping]) -> Figure:
    """PSNR and SSIM of every denoiser on the test set, best first."""
    names = [row["method"] for row in rows][::-1]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(rows) + 1.2), sharey=True)
    for ax, metric in zip(axes, ("psnr", "ssim"), strict=True):
        values = [row[metric] for row in rows][::-1]
        ax.barh(names, values, color="tab:blue")
        for y, value in enumerate(values):
            ax.text(
                value,
                y,
                f" {value:.3f}" if metric == "ssim" else f" {value:.2f}",
                va="center",
                fontsize=8,
            )
        ax.set(title="PSNR (dB)" if metric == "psnr" else "SSIM", xlim=(0, max(values) * 1.18))
    fig.tight_layout()
    return fig


def code_map(points: np.ndarray, labels: np.ndarray, title: str) -> Figure:
    """A 2-D embedding of codes, coloured by digit."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    scatter = ax.scatter(
        points[:, 0], points[:, 1], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5
    )
    fig.colorbar(scatter, ax=ax, ticks=range(10), label="digit")
    ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    return fig


def robustness(rows: Sequence[Mapping], baseline: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    factors = [row["noise_factor"] for row in rows]
    for key, label in (
        ("denoiser_psnr", "autoencoder"),
        ("baseline_psnr", baseline),
        ("noisy_psnr", "noisy input"),
    ):
        ax.plot(factors, [row[key] for row in rows], marker="o", label=label)
    ax.set(xlabel="noise factor", ylabel="PSNR (dB)", title="Denoising against noise strength")
    ax.legend()
    fig.tight_layout()
    return fig
