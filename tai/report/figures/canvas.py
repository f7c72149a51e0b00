"""What the report's figures share: the grid of image cells, image display, PNG rendering.

Every figure is a ``matplotlib.figure.Figure`` on the Agg canvas, never ``pyplot``: no
global figure state, no GUI backend chosen at import, nothing saved by the figure code.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor

HEATMAP_CMAP = "RdBu_r"  # diverging: red = evidence for the class, blue = against


def figure_png(figure: Figure, *, dpi: int = 110, tight: bool = True) -> bytes:
    """The figure rendered as PNG bytes; ``tight`` crops it to what is drawn, which costs
    a second draw (leave it off for figures laid out with fixed margins)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buffer.getvalue()


def fixed_margins(
    fig: Figure, *, left: float, right: float, bottom: float, top: float, **grid: float
) -> None:
    """Lay ``fig`` out with margins in inches instead of a layout solver (constrained
    layout was 40% of drawing and saving a two-panel figure: 0.29 -> 0.17 s, 2026-12-04);
    ``grid``: ``hspace``, ``wspace``."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        **grid,
    )


CELL = 1.6  # inches per image cell


def grid_figure(rows: int, columns: int) -> Figure:
    fig = Figure(figsize=(CELL * columns + 0.6, CELL * rows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def min_max(images: Tensor) -> Tensor:
    low, high = float(images.min()), float(images.max())
    return (images - low) / (high - low) if high > low else torch.zeros_like(images)


def show_image(ax, image: Tensor, *, title: str | None = None) -> None:
    image = image.detach().float().cpu()
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        image = min_max(image)
    array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
    ax.set_axis_on()
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


# -- mosaics: many small images drawn as one ---------------------------------------------
# An axes per image (and a colour bar per map) is what makes a figure slow: ten
# explanation sheets of six axes and four colour bars each took 1.8 s to draw and save.
# A mosaic is one array shown in one axes, its labels placed as text (2026-12-04).


def image_rgb(image: Tensor) -> np.ndarray:
    """A ``(C, H, W)`` image (C 1 or 3) as ``(H, W, 3)`` floats in [0, 1], min-max scaled
    when its values are outside [0, 1] (as :func:`show_image` shows it)."""
    image = image.detach().float().cpu()
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        image = min_max(image)
    return image.expand(3, -1, -1).permute(1, 2, 0).numpy()


def heat_rgb(heat: np.ndarray) -> np.ndarray:
    """An ``(H, W)`` attribution map as ``(H, W, 3)`` RGB on :data:`HEATMAP_CMAP`: 0 is
    white, and the map's largest ``|value|`` the colormap's end (an all-zero map is
    white)."""
    limit = float(np.abs(heat).max()) or 1.0
    return colormaps[HEATMAP_CMAP](0.5 + 0.5 * np.asarray(heat) / limit)[..., :3]


def mosaic(rows: Sequence[Sequence[np.ndarray]], gap: int) -> np.ndarray:
    """Cells of one ``(H, W, 3)`` shape as one image: row by row, ``gap`` white pixels
    between neighbours."""
    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    out = np.ones((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, 3))
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            top, left = i * (height + gap), j * (width + gap)
            out[top : top + height, left : left + width] = cell
    return out


def mosaic_gap(width: int) -> int:
    """White pixels between the cells of :func:`mosaic_figure`'s mosaic, for cells
    ``width`` pixels wide."""
    return max(1, width // 14)


def mosaic_figure(
    rows: Sequence[Sequence[np.ndarray]],
    column_titles: Sequence[str],
    row_titles: Sequence[str],
    *,
    cell: float = 1.1,
    colorbar: bool = True,
    title: str | None = None,
) -> Figure:
    """Cells of one ``(H, W, 3)`` shape (:func:`image_rgb`, :func:`heat_rgb`) as one
    figure: a mosaic in one axes, titles above the columns and left of the rows, and one
    colour bar for every heat map (each scaled to its own largest ``|value|``; none when
    ``colorbar`` is False), ``title`` above it all. ``cell``: inches a cell; the margins
    are fixed in inches."""
    height, width = rows[0][0].shape[:2]
    gap = mosaic_gap(width)
    columns = max(len(row) for row in rows)
    left, right, bottom = 1.2, 0.9 if colorbar else 0.2, 0.1
    top = 0.45 + (0.3 if title else 0.0)
    fig_w = cell * columns + left + right
    fig_h = max(cell * len(rows) + top + bottom + 0.15, 2.0)
    fig = Figure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, y=1 - 0.1 / fig_h, va="top", fontsize=10)
    ax = fig.add_axes(
        (left / fig_w, bottom / fig_h, 1 - (left + right) / fig_w, 1 - (top + bottom) / fig_h)
    )
    ax.imshow(mosaic(rows, gap), interpolation="nearest")
    ax.set_axis_off()
    for j, text in enumerate(column_titles):
        ax.text(j * (width + gap) + width / 2, -gap, text, ha="center", va="bottom", fontsize=8)
    for i, text in enumerate(row_titles):
        ax.text(-gap, i * (height + gap) + height / 2, text, ha="right", va="center", fontsize=9)
    if not colorbar:
        return fig
    bar = fig.add_axes((1 - 0.75 / fig_w, 0.25 / fig_h, 0.12 / fig_w, 1 - 0.9 / fig_h))
    fig.colorbar(ScalarMappable(Normalize(-1.0, 1.0), cmap=HEATMAP_CMAP), cax=bar, ticks=[-1, 0, 1])
    bar.set_ylabel("map / max |map|", fontsize=7)
    bar.tick_params(labelsize=7)
    return fig
