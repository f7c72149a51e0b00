"""Figures for prototype explanations: each prototype above its attribution heat map.

Figures are built on matplotlib's Agg canvas without ``pyplot``, so no global figure state
or GUI backend is touched; callers log or save the returned figure themselves.
"""

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["prototype_figure"]

_HEATMAP_CMAP = "RdBu_r"  # diverging: red = evidence for the class, blue = against


def prototype_figure(
    images: Tensor,
    attributions: Tensor,
    labels: list[int],
    *,
    titles: list[str] | None = None,
) -> Figure:
    """A grid with one column per prototype: the image on top, its attributions below.

    The heat map is the attribution summed over channels, drawn with a diverging colormap
    whose centre (white) is 0 and whose limits are symmetric, ``+-max|attribution|`` per
    map. Images with values outside ``[0, 1]`` (e.g. normalised tensors) are min-max
    scaled for display.

    Args:
        images: ``(N, C, H, W)`` images with ``C`` 1 or 3.
        attributions: ``(N, C, H, W)`` or ``(N, H, W)`` attribution maps.
        labels: the class of each prototype, length ``N``.
        titles: one column title per prototype; default ``"class <label>"``.

    Returns:
        A matplotlib :class:`~matplotlib.figure.Figure` on the Agg canvas (never saved).

    Raises:
        ValueError: on empty input, wrong shapes or lengths, or ``C`` not 1 or 3.
    """
    _check(images, attributions, labels, titles)
    n = images.shape[0]
    titles = titles if titles is not None else [f"class {label}" for label in labels]
    heat = attributions if attributions.ndim == 3 else attributions.sum(dim=1)
    heat = heat.detach().float().cpu()

    fig = Figure(figsize=(2.2 * n, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False)
    for j in range(n):
        top, bottom = axes[0, j], axes[1, j]
        image = _displayable(images[j])
        top.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
        top.set_title(titles[j], fontsize=9)
        limit = float(heat[j].abs().max()) or 1.0
        shown = bottom.imshow(heat[j].numpy(), cmap=_HEATMAP_CMAP, vmin=-limit, vmax=limit)
        fig.colorbar(shown, ax=bottom, shrink=0.8)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("prototype")
    axes[1, 0].set_ylabel("attribution")
    return fig


def _check(
    images: Tensor, attributions: Tensor, labels: list[int], titles: list[str] | None
) -> None:
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be a non-empty (N, C, H, W) batch with C 1 or 3, "
            f"got shape {tuple(images.shape)}."
        )
    n, _, height, width = images.shape
    if attributions.shape not in (images.shape, (n, height, width)):
        raise ValueError(
            f"attributions must have shape {tuple(images.shape)} or {(n, height, width)} "
            f"to match images, got {tuple(attributions.shape)}."
        )
    if len(labels) != n:
        raise ValueError(f"labels must have one entry per image ({n}), got {len(labels)}.")
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}.")


def _displayable(image: Tensor) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` array in ``[0, 1]``."""
    image = image.detach().float().cpu()
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
