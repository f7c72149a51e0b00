"""What the report's figures share: the grid of image cells, image display, PNG rendering.

Every figure is a ``matplotlib.figure.Figure`` on the Agg canvas, never ``pyplot``: no
global figure state, no GUI backend chosen at import, nothing saved by the figure code.
"""

from __future__ import annotations

import io

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

HEATMAP_CMAP = "RdBu_r"  # diverging: red = evidence for the class, blue = against


def figure_png(figure: Figure, *, dpi: int = 110, tight: bool = True) -> bytes:
    """The figure rendered as PNG bytes; ``tight`` crops it to what is drawn, which costs
    a second draw (leave it off for figures laid out with fixed margins)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buffer.getvalue()


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
