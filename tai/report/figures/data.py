"""Figures of the data card: factors of variation (traversals, explained variance, their
distributions per split and class).

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never ``pyplot``:
no global figure state, no GUI backend, nothing saved. Callers log or save them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from tai.report.figures.canvas import CELL, min_max, show_image


def factor_traversal_figure(traversals: list[Tensor], explained: list[float]) -> Figure:
    """One row per factor: the images along it, from ``-span`` to ``+span`` sd.

    Each row is scaled to ``[0, 1]`` by its own minimum and maximum, so the change along a
    factor is visible even when reconstructions leave the pixel range.

    Args:
        traversals: one ``(steps, C, H, W)`` tensor per factor (from
            :func:`tai.data.factors.traversal`), ``C`` 1 or 3, all with the same ``steps``.
        explained: the explained-variance ratio of each factor, in ``[0, 1]``.

    Returns:
        A :class:`~matplotlib.figure.Figure` with one image axes per factor, its steps
        side by side (:func:`traversal_strip`).

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
    # One image per factor, its steps side by side, rather than an axes per step: 56 axes
    # for the default 8 factors x 7 steps took 0.8 s to draw, most of the data card's
    # figure time (2026-12-04).
    width = traversals[0].shape[-1]
    fig = Figure(figsize=(CELL * steps * 0.6 + 1.2, CELL * 0.6 * len(traversals) + 0.6))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.02, top=0.9, hspace=0.08)
    axes = fig.subplots(len(traversals), 1, squeeze=False)[:, 0]
    for j, (ax, row) in enumerate(zip(axes, traversals, strict=True)):
        show_image(ax, traversal_strip(min_max(row.detach().float().cpu()), max(1, width // 14)))
        ax.set_ylabel(
            f"factor {j}\n{100 * explained[j]:.1f}%",
            fontsize=8,
            rotation=0,
            ha="right",
            va="center",
        )
    axes[0].set_title("-", fontsize=9, loc="left")
    axes[0].set_title("+", fontsize=9, loc="right")
    fig.suptitle("Factors of variation (traversal from -span to +span sd)", fontsize=10)
    return fig


def traversal_strip(row: Tensor, gap: int = 1) -> Tensor:
    """``(steps, C, H, W)`` images side by side as one ``(C, H, steps W + (steps - 1) gap)``
    image, separated by ``gap`` white columns."""
    steps, channels, height, _ = row.shape
    white = torch.ones(channels, height, gap, dtype=row.dtype)
    parts = [part for image in row for part in (image, white)][:-1]
    return torch.cat(parts, dim=2)


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
