"""Figures of the security checks: accuracy under adversarial attack against the radius.

Object-oriented matplotlib (``matplotlib.figure.Figure``), as in
:mod:`tai.report.figures.reliability`.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from tai.principles.security.adversarial import AdversarialResult
from tai.report.figures.canvas import fixed_margins


def adversarial_curve(results: Sequence[AdversarialResult]) -> Figure:
    """Accuracy against the L-infinity radius, one line per attack (clean accuracy at 0).

    Raises:
        ValueError: ``results`` is empty.
    """
    if not results:
        raise ValueError("no adversarial results to plot; run at least one attack")
    fig = Figure(figsize=(5.5, 3.6))
    fixed_margins(fig, left=0.75, right=0.15, bottom=0.55, top=0.35)
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
