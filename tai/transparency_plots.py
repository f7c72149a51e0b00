"""Figures for the transparency checks: factors of variation, prototypes and criticisms,
and explanation sheets.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never ``pyplot``:
no global figure state, no GUI backend, nothing saved. Callers log or save them.

Heat maps are the attribution summed over channels, on a diverging colormap centred on 0
with symmetric limits ``+-max|map|`` (red: evidence for the class, blue: against), as in
:func:`tai.explain_plots.prototype_figure`.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "explained_variance_figure",
    "explanation_sheet_figure",
    "factor_traversal_figure",
    "prototype_criticism_figure",
]

_HEATMAP_CMAP = "RdBu_r"
_CELL = 1.6  # inches per image cell


def factor_traversal_figure(traversals: list[Tensor], explained: list[float]) -> Figure:
    """One row per factor: the images along it, from ``-span`` to ``+span`` sd.

    Each row is scaled to ``[0, 1]`` by its own minimum and maximum, so the change along a
    factor is visible even when reconstructions leave the pixel range.

    Args:
        traversals: one ``(steps, C, H, W)`` tensor per factor (from
            :func:`tai.factors.traversal`), ``C`` 1 or 3, all with the same ``steps``.
        explained: the explained-variance ratio of each factor, in ``[0, 1]``.

    Returns:
        A :class:`~matplotlib.figure.Figure` with ``len(traversals) * steps`` image axes.

    Raises:
        ValueError: on no traversals, lengths that differ, or malformed tensors.
    """
    if not traversals:
        raise ValueError("traversals is empty: pass at least one (steps, C, H, W) tensor.")
    if len(explained) != len(traversals):
        raise ValueError(
            f"explained must have one entry per traversal ({len(traversals)}), "
            f"got {len(explained)}."
        )
    steps = traversals[0].shape[0]
    for j, row in enumerate(traversals):
        if row.ndim != 4 or row.shape[0] != steps or row.shape[1] not in (1, 3):
            raise ValueError(
                f"traversals[{j}] must have shape ({steps}, C, H, W) with C 1 or 3, "
                f"got {tuple(row.shape)}."
            )
    fig = _figure(len(traversals), steps)
    axes = fig.subplots(len(traversals), steps, squeeze=False)
    for j, row in enumerate(traversals):
        scaled = _min_max(row.detach().float().cpu())
        for i in range(steps):
            _show_image(axes[j, i], scaled[i])
        axes[j, 0].set_ylabel(f"factor {j}\n{100 * explained[j]:.1f}%", fontsize=8)
    axes[0, 0].set_title("-", fontsize=9)
    axes[0, steps - 1].set_title("+", fontsize=9)
    fig.suptitle("Factors of variation (traversal from -span to +span sd)", fontsize=10)
    return fig


def explained_variance_figure(ratio: Tensor | Sequence[float]) -> Figure:
    """Explained-variance ratio per component (bars) and its cumulative sum (line).

    Args:
        ratio: ``(k,)`` explained-variance ratios, each in ``[0, 1]``.

    Returns:
        A figure with one axis: ``k`` bars and one line.

    Raises:
        ValueError: on an empty ``ratio`` or values outside ``[0, 1]``.
    """
    values = np.asarray(
        ratio.detach().cpu().numpy() if isinstance(ratio, Tensor) else ratio, dtype=float
    ).reshape(-1)
    if values.size == 0 or not np.all((values >= 0) & (values <= 1 + 1e-6)):
        raise ValueError(
            f"ratio must be a non-empty sequence of values in [0, 1], got {values.tolist()}."
        )
    fig = Figure(figsize=(max(4.0, 0.35 * values.size + 2), 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positions = np.arange(1, values.size + 1)
    ax.bar(positions, values, color="tab:blue", label="per component")
    ax.plot(positions, np.cumsum(values), color="tab:orange", marker="o", label="cumulative")
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance ratio")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="center right")
    return fig


def factor_distribution_figure(
    distributions: Mapping[str, Mapping[str, Mapping[str, object]]], *, n_factors: int = 2
) -> Figure:
    """Median and quartiles of the top factor scores per class, one marker per split.

    Args:
        distributions: split -> class -> ``{"median", "q25", "q75", ...}`` lists per factor
            (the data card's ``factors.distributions``).
        n_factors: factors shown, one panel each.

    Raises:
        ValueError: ``distributions`` is empty.
    """
    splits = sorted(distributions)
    if not splits or not any(distributions[s] for s in splits):
        raise ValueError("no factor distributions to plot; the data card has none")
    classes = sorted({c for s in splits for c in distributions[s]})
    k = min(n_factors, min(len(v["median"]) for s in splits for v in distributions[s].values()))
    fig = Figure(figsize=(5.0 * k, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, k, squeeze=False)[0]
    width = 0.8 / len(splits)
    for f, ax in enumerate(axes):
        for i, split in enumerate(splits):
            xs, med, low, high = [], [], [], []
            for j, name in enumerate(classes):
                stats = distributions[split].get(name)
                if stats is None:
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                med.append(stats["median"][f])
                low.append(stats["median"][f] - stats["q25"][f])
                high.append(stats["q75"][f] - stats["median"][f])
            ax.errorbar(xs, med, yerr=[low, high], fmt="o", markersize=3, capsize=2, label=split)
        ax.set_xticks(range(len(classes)), classes)
        ax.set_xlabel("class")
        ax.set_ylabel(f"factor {f + 1} score")
        ax.set_title(f"Factor {f + 1}: median and quartiles per class")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


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
        A figure with ``K`` rows and ``max P + max Q`` columns; unused cells are hidden.

    Raises:
        ValueError: on lengths that differ, no classes, or malformed tensors.
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
    n_protos = max(int(images.shape[0]) for images in images_protos)
    n_crits = max(int(images.shape[0]) for images in images_crits)
    columns = max(1, n_protos + n_crits)
    fig = _figure(k, columns)
    axes = fig.subplots(k, columns, squeeze=False)
    for row in range(k):
        for col in range(columns):
            axes[row, col].set_axis_off()
        for i, image in enumerate(images_protos[row]):
            _show_image(axes[row, i], image, title="prototype" if row == 0 else None)
        for i, image in enumerate(images_crits[row]):
            ax = axes[row, n_protos + i]
            _show_image(ax, image, title="criticism" if row == 0 else None)
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:red")
                spine.set_linewidth(2.0)
        first = axes[row, 0]
        first.set_axis_on()
        first.set_xticks([])
        first.set_yticks([])
        first.set_ylabel(class_names[row], fontsize=9)
    fig.suptitle("MMD-critic prototypes and criticisms", fontsize=10)
    return fig


def explanation_sheet_figure(
    image: Tensor,
    maps: Mapping[str, Tensor],
    class_mean: Tensor | None,
    title: str,
) -> Figure:
    """One row: the image, each method's map, and the class-mean attribution.

    Args:
        image: ``(C, H, W)`` image, ``C`` 1 or 3.
        maps: method name -> ``(C, H, W)``, ``(1, H, W)`` or ``(H, W)`` map of that image.
        class_mean: the mean map over the class (same shapes accepted), or ``None``.
        title: the figure's title (e.g. the image id, its label and the prediction).

    Returns:
        A figure with ``1 + len(maps) + (class_mean is not None)`` image axes, the heat
        maps each with a colorbar.

    Raises:
        ValueError: on a malformed image, no maps, or a map of another size.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"image must have shape (C, H, W) with C 1 or 3, got {tuple(image.shape)}."
        )
    if not maps:
        raise ValueError("maps is empty: pass at least one method's map.")
    size = tuple(image.shape[1:])
    panels = dict(maps)
    if class_mean is not None:
        panels["class mean"] = class_mean
    heats = {name: _heat(name, value, size) for name, value in panels.items()}
    fig = _figure(1, 1 + len(heats))
    axes = fig.subplots(1, 1 + len(heats), squeeze=False)[0]
    _show_image(axes[0], image, title="image")
    for ax, (name, heat) in zip(axes[1:], heats.items(), strict=True):
        limit = float(np.abs(heat).max()) or 1.0
        shown = ax.imshow(heat, cmap=_HEATMAP_CMAP, vmin=-limit, vmax=limit)
        fig.colorbar(shown, ax=ax, shrink=0.7)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return fig


def _figure(rows: int, columns: int) -> Figure:
    fig = Figure(figsize=(_CELL * columns + 0.6, _CELL * rows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _min_max(images: Tensor) -> Tensor:
    low, high = float(images.min()), float(images.max())
    return (images - low) / (high - low) if high > low else torch.zeros_like(images)


def _show_image(ax, image: Tensor, *, title: str | None = None) -> None:
    image = image.detach().float().cpu()
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        image = _min_max(image)
    array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
    ax.set_axis_on()
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _heat(name: str, value: Tensor, size: tuple[int, ...]) -> np.ndarray:
    value = value.detach().float().cpu()
    heat = value if value.ndim == 2 else value.sum(dim=0) if value.ndim == 3 else None
    if heat is None or tuple(heat.shape) != size:
        raise ValueError(
            f"map {name!r} must have shape (C, H, W), (1, H, W) or (H, W) with (H, W) = "
            f"{size}, got {tuple(value.shape)}."
        )
    return heat.numpy()
