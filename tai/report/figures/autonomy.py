"""Figures of the autonomy-and-control checks: the risk-coverage curve of selective
prediction, with the deferral threshold's operating point.

Object-oriented matplotlib (``matplotlib.figure.Figure``), as in
:mod:`tai.report.figures.reliability`.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from tai.principles.autonomy.selective import RiskCoverage


def risk_coverage_curve(curve: RiskCoverage, *, threshold_coverage: float | None = None) -> Figure:
    """Selective risk against coverage (Geifman & El-Yaniv 2017), with the coverage the
    abstention threshold reaches on the test split marked."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(curve.coverage, [100 * r for r in curve.risk], label=f"model (AURC {curve.aurc:.4f})")
    if threshold_coverage is not None:
        ax.axvline(threshold_coverage, color="grey", linestyle="--", label="abstention threshold")
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("selective risk (% errors among answered)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Risk–coverage curve")
    return fig
