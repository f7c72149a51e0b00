"""Figures of the adversarial and selective-prediction checks, for the trust report.

Object-oriented matplotlib (``matplotlib.figure.Figure``), as in :mod:`tai.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from tai.adversarial import AdversarialResult
from tai.selective import RiskCoverage

__all__ = ["adversarial_curve", "risk_coverage_curve"]


def adversarial_curve(results: Sequence[AdversarialResult]) -> Figure:
    """Accuracy against the L-infinity radius, one line per attack (clean accuracy at 0).

    Raises:
        ValueError: ``results`` is empty.
    """
    if not results:
        raise ValueError("no adversarial results to plot; run at least one attack")
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for r in results:
        ax.plot(
            [0.0, *r.epsilons],
            [100 * r.clean_accuracy, *(100 * a for a in r.accuracy)],
            marker="o",
            label=f"{r.attack.upper()}" + (f" ({r.steps} steps)" if r.attack == "pgd" else ""),
        )
    ax.set_xlabel("L∞ radius ε (pixel values in [0, 1])")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Accuracy under adversarial attack")
    return fig


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
