"""Figures of the transparency checks: prototypes and criticisms, explanation sheets.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never ``pyplot``:
no global figure state, no GUI backend, nothing saved. Callers log or save them.

Heat maps are the attribution summed over channels, on a diverging colormap centred on 0
with symmetric limits ``+-max|map|`` (red: evidence for the class, blue: against), as in
:func:`prototype_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from tai.report.figures.canvas import (
    heat_rgb,
    image_rgb,
    mosaic_figure,
    mosaic_gap,
)


def prototype_criticism_figure(
    images_protos: Sequence[Tensor],
    images_crits: Sequence[Tensor],
    class_names: Sequence[str],
) -> Figure:
    """One row per class: its prototypes, then its criticisms (framed in red).

    Args:
        images_protos: per class a ``(P, C, H, W)`` tensor of prototype images (a
            ``(K, P, C, H, W)`` tensor works too).
        images_crits: per class a ``(Q, C, H, W)`` tensor of criticism images (``Q`` may
            be 0).
        class_names: one name per class.

    Returns:
        A mosaic figure (:func:`~tai.report.figures.canvas.mosaic_figure`, no colour bar)
        with ``K`` rows and ``max P + max Q`` columns; unused cells are white.

    Raises:
        ValueError: on lengths that differ, no classes, malformed tensors, no image at all
            or images of different sizes.
    """
    k = len(class_names)
    if k == 0 or len(images_protos) != k or len(images_crits) != k:
        raise ValueError(
            f"images_protos, images_crits and class_names must have one entry per class and "
            f"at least one class; got {len(images_protos)}, {len(images_crits)} and {k}."
        )
    for name, group in (("images_protos", images_protos), ("images_crits", images_crits)):
        for j, images in enumerate(group):
            if images.ndim != 4 or images.shape[1] not in (1, 3):
                raise ValueError(
                    f"{name}[{j}] must have shape (n, C, H, W) with C 1 or 3, "
                    f"got {tuple(images.shape)}."
                )
    # One mosaic of equal cells: every image of one size, and at least one image.
    sizes = {tuple(x.shape[2:]) for x in (*images_protos, *images_crits) if len(x)}
    if len(sizes) != 1:
        raise ValueError(
            "prototype_criticism_figure needs at least one image, all of one height and "
            f"width; got sizes {sorted(sizes)}."
        )
    (size,) = sizes
    n_protos = max(int(images.shape[0]) for images in images_protos)
    n_crits = max(int(images.shape[0]) for images in images_crits)
    blank = np.ones((*size, 3))
    # One mosaic, not an axes per image: ten classes drawn and saved, 0.38 -> 0.075 s
    # (2026-12-04). Criticisms are framed in red by a rectangle around their cell.
    rows, frames = [], []
    for row in range(k):
        protos = [image_rgb(image) for image in images_protos[row]]
        crits = [image_rgb(image) for image in images_crits[row]]
        rows.append(protos + [blank] * (n_protos - len(protos)) + crits)
        frames += [(row, n_protos + i) for i in range(len(crits))]
    titles = ["prototype"] * n_protos + ["criticism"] * n_crits
    fig = mosaic_figure(
        rows, titles, class_names, colorbar=False, title="MMD-critic prototypes and criticisms"
    )
    ax = fig.axes[0]
    height, width = size
    gap = mosaic_gap(width)
    for row, column in frames:
        left, top = column * (width + gap) - 0.5, row * (height + gap) - 0.5
        ax.add_patch(
            Rectangle((left, top), width, height, fill=False, edgecolor="tab:red", linewidth=2.0)
        )
    return fig


def explanation_sheets_figure(
    images: Tensor,
    maps: Mapping[str, Tensor],
    class_means: Tensor | None,
    titles: Sequence[str],
) -> Figure:
    """One row per image: the image, each method's map, and its class's mean map.

    Every map is scaled to its own largest ``|value|`` (one colour bar, -1 to 1, serves
    them all). The rows are drawn as one mosaic in one axes, with the method names above
    the columns and ``titles`` left of the rows.

    Args:
        images: ``(N, C, H, W)`` images, ``C`` 1 or 3.
        maps: method name -> ``(N, C, H, W)``, ``(N, 1, H, W)`` or ``(N, H, W)`` maps of
            the images.
        class_means: ``(N, ...)`` the mean map of each image's class (the same shapes
            accepted), or ``None``.
        titles: one per image (e.g. its class).

    Returns:
        A figure with the mosaic's axes and the colour bar's.

    Raises:
        ValueError: on malformed images, no maps, a map of another size or count, or a
            number of titles that is not one per image.
    """
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be a non-empty (N, C, H, W) batch with C 1 or 3, got shape "
            f"{tuple(images.shape)}."
        )
    if not maps:
        raise ValueError("maps is empty: pass at least one method's map.")
    n, size = images.shape[0], tuple(images.shape[2:])
    if len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}.")
    panels = dict(maps)
    if class_means is not None:
        panels["class mean"] = class_means
    for name, value in panels.items():
        if value.shape[0] != n:
            raise ValueError(
                f"map {name!r} must hold one map per image ({n}), got {value.shape[0]}."
            )
    rows = [
        [image_rgb(images[k])] + [heat_rgb(_heat(name, v[k], size)) for name, v in panels.items()]
        for k in range(n)
    ]
    return mosaic_figure(rows, ["image", *panels], titles)


def _heat(name: str, value: Tensor, size: tuple[int, ...]) -> np.ndarray:
    value = value.detach().float().cpu()
    heat = value if value.ndim == 2 else value.sum(dim=0) if value.ndim == 3 else None
    if heat is None or tuple(heat.shape) != size:
        raise ValueError(
            f"map {name!r} must have shape (C, H, W), (1, H, W) or (H, W) with (H, W) = "
            f"{size}, got {tuple(value.shape)}."
        )
    return heat.numpy()


def prototype_figure(
    images: Tensor,
    attributions: Tensor,
    labels: list[int],
    *,
    titles: list[str] | None = None,
) -> Figure:
    """A grid with one column per prototype: the image on top, its attributions below.

    The heat map is the attribution summed over channels, on a diverging colormap whose
    centre (white) is 0, each map scaled to its own ``max|attribution|`` (one colour bar,
    -1 to 1, for all). Images with values outside ``[0, 1]`` (e.g. normalised tensors)
    are min-max scaled for display.

    Args:
        images: ``(N, C, H, W)`` images with ``C`` 1 or 3.
        attributions: ``(N, C, H, W)`` or ``(N, H, W)`` attribution maps.
        labels: the class of each prototype, length ``N``.
        titles: one column title per prototype; default ``"class <label>"``.

    Returns:
        A mosaic figure (:func:`~tai.report.figures.canvas.mosaic_figure`) on the Agg
        canvas (never saved).

    Raises:
        ValueError: on empty input, wrong shapes or lengths, or ``C`` not 1 or 3.
    """
    _check(images, attributions, labels, titles)
    titles = titles if titles is not None else [f"class {label}" for label in labels]
    heat = attributions if attributions.ndim == 3 else attributions.sum(dim=1)
    heat = heat.detach().float().cpu().numpy()
    # A mosaic, not an axes and a colour bar per map: the prototypes callback draws this
    # during training (ten prototypes drawn and saved: 0.78 -> 0.10 s, 2026-12-04).
    rows = [[image_rgb(image) for image in images], [heat_rgb(h) for h in heat]]
    return mosaic_figure(rows, titles, ["prototype", "attribution"])


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
