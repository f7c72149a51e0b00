"""The trends page: whether trustworthiness goes up or down over versions and batches."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib.figure import Figure

from tai.report.figures.canvas import figure_png


@dataclass(frozen=True)
class MetricSeries:
    """One metric over time: ``(label, value, (lower, upper) or None)`` per point, and the
    threshold of its gate or rule (drawn as a line) with its comparison."""

    name: str
    points: Sequence[tuple[str, float, tuple[float, float] | None]]
    threshold: float | None = None
    op: str = ""


def series_figure(series: MetricSeries) -> Figure:
    """Values in order, the interval as a band where there is one, the gate as a line."""
    fig = Figure(figsize=(4.2, 2.4), layout="constrained")
    ax = fig.add_subplot()
    x = list(range(len(series.points)))
    values = [v for _, v, _ in series.points]
    ax.plot(x, values, marker="o", color="#2a6fdb", linewidth=1.5, markersize=4)
    bands = [(i, b) for i, (_, _, b) in enumerate(series.points) if b is not None]
    if bands:
        ax.fill_between(
            [i for i, _ in bands],
            [b[0] for _, b in bands],
            [b[1] for _, b in bands],
            color="#2a6fdb",
            alpha=0.15,
            linewidth=0,
        )
    if series.threshold is not None and math.isfinite(series.threshold):
        ax.axhline(series.threshold, color="#c0392b", linestyle="--", linewidth=1)
        ax.text(
            0.99,
            series.threshold,
            f" {series.op} {series.threshold:g}",
            color="#c0392b",
            fontsize=7,
            ha="right",
            va="bottom",
            transform=ax.get_yaxis_transform(),
        )
    ax.set_xticks(x, [label for label, _, _ in series.points], fontsize=7, rotation=30)
    ax.set_title(series.name, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3)
    return fig


def render_trends(
    model_name: str,
    gated: Sequence[MetricSeries],
    monitored: Sequence[MetricSeries],
    *,
    created: str,
    champion: str | None,
) -> str:
    """The page, with one small figure per series (those without any point left out)."""

    def drawn(items: Sequence[MetricSeries]) -> list[tuple[MetricSeries, str]]:
        return [
            (s, base64.b64encode(figure_png(series_figure(s))).decode())
            for s in items
            if any(not math.isnan(v) for _, v, _ in s.points)
        ]

    env = Environment(
        loader=PackageLoader("tai.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    return env.get_template("trends.html.j2").render(
        model_name=model_name,
        created=created,
        champion=champion,
        gated=drawn(gated),
        monitored=drawn(monitored),
    )
