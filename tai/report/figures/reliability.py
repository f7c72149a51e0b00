"""Figures for calibration and robustness results.

The figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure``),
not with ``pyplot``: they render through Agg on ``savefig`` whatever the session's
backend, never open a window, and are not kept in pyplot's figure registry, so nothing
leaks when a caller forgets to close them. The caller saves or logs them (e.g.
``fig.savefig(path)`` or ``logger.experiment.log_figure(run_id, fig, "x.png")``).
"""

from __future__ import annotations

from matplotlib.figure import Figure

from tai.principles.reliability.calibration import CalibrationResult
from tai.principles.reliability.robustness import RobustnessResult
from tai.report.figures.canvas import fixed_margins

__all__ = ["reliability_diagram", "robustness_curve"]


def reliability_diagram(result: CalibrationResult, *, title: str = "Reliability diagram") -> Figure:
    """Accuracy per confidence bin against the diagonal, with a confidence histogram.

    Upper panel: one bar per non-empty bin at its accuracy, the gap to the bin's mean
    confidence shaded, and the diagonal of perfect calibration; ECE and MCE in the title
    and legend. Lower panel: number of samples per bin, with the overall accuracy and
    mean confidence marked (as in Guo et al. 2017, figure 1).

    Args:
        result: from :func:`tai.principles.reliability.calibration.calibration_summary`.
        title: figure title; the ECE is appended.

    Returns:
        A figure with two axes (reliability, histogram).
    """
    bins = result.bins
    left = bins.edges[:-1]
    width = [hi - lo for lo, hi in zip(bins.edges[:-1], bins.edges[1:], strict=True)]
    shown = [i for i, c in enumerate(bins.count) if c > 0]

    fig = Figure(figsize=(5.5, 6.5))
    fixed_margins(fig, left=0.75, right=0.15, bottom=0.55, top=0.35)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax = fig.add_subplot(grid[0])
    ax_hist = fig.add_subplot(grid[1], sharex=ax)

    ax.bar(
        [left[i] for i in shown],
        [bins.accuracy[i] for i in shown],
        width=[width[i] for i in shown],
        align="edge",
        color="tab:blue",
        edgecolor="black",
        linewidth=0.6,
        label="Accuracy",
    )
    ax.bar(
        [left[i] for i in shown],
        [bins.confidence[i] - bins.accuracy[i] for i in shown],
        bottom=[bins.accuracy[i] for i in shown],
        width=[width[i] for i in shown],
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        label="Gap to confidence",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="Perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy")
    ax.legend(loc="upper left", title=f"ECE = {result.ece:.4f}\nMCE = {result.mce:.4f}")
    ax.set_title(f"{title} (ECE = {result.ece:.4f}, n = {result.n_samples})")
    ax.tick_params(labelbottom=False)

    ax_hist.bar(
        left,
        bins.count,
        width=width,
        align="edge",
        color="tab:gray",
        edgecolor="black",
        linewidth=0.6,
    )
    total = sum(bins.count)
    mean_confidence = sum(c * n for c, n in zip(bins.confidence, bins.count, strict=True)) / total
    ax_hist.axvline(result.accuracy, color="tab:blue", linestyle="--", label="Accuracy")
    ax_hist.axvline(mean_confidence, color="tab:red", linestyle=":", label="Mean confidence")
    ax_hist.set_xlabel("Confidence")
    ax_hist.set_ylabel("Count")
    ax_hist.legend(loc="upper left", fontsize="small")
    return fig


def robustness_curve(
    result: RobustnessResult, *, title: str = "Accuracy under corruption"
) -> Figure:
    """Accuracy against corruption severity, one line per corruption.

    Severity 0 is the clean set: its accuracy is marked there and drawn as a dashed
    horizontal line; a thick black line gives the mean over corruptions per severity.

    Args:
        result: from :func:`tai.principles.reliability.robustness.corruption_accuracy`.
        title: figure title; the mean corruption accuracy is appended.

    Returns:
        A figure with one axes.
    """
    severities = list(result.severities)
    fig = Figure(figsize=(7, 4.5))
    fixed_margins(fig, left=0.75, right=1.75, bottom=0.55, top=0.35)  # the legend on the right
    ax = fig.add_subplot()

    for name, row in result.accuracy.items():
        ax.plot(severities, row, marker="o", linewidth=1.2, label=name)
    mean_row = [
        sum(row[i] for row in result.accuracy.values()) / len(result.accuracy)
        for i in range(len(severities))
    ]
    ax.plot(severities, mean_row, color="black", linewidth=2.5, marker="s", label="mean")
    ax.axhline(
        result.clean_accuracy,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"clean ({result.clean_accuracy:.3f})",
    )
    ax.plot([0], [result.clean_accuracy], marker="*", markersize=12, color="black")

    ax.set_xticks([0, *severities], ["clean", *(str(s) for s in severities)])
    ax.set_xlim(-0.3, max(severities) + 0.3)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Severity")
    ax.set_ylabel("Accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    ax.set_title(f"{title} (mean = {result.mean_corruption_accuracy:.3f})")
    return fig
