"""Figures: structure of the reliability diagram and the robustness curve."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from tai.principles.reliability.calibration import calibration_summary
from tai.principles.reliability.robustness import RobustnessResult
from tai.report.figures.reliability import reliability_diagram, robustness_curve


@pytest.fixture
def calibration():
    g = torch.Generator().manual_seed(0)
    probs = (2 * torch.randn(200, 5, generator=g)).softmax(dim=1)
    target = torch.randint(0, 5, (200,), generator=g)
    return calibration_summary(probs, target, n_bins=10)


@pytest.fixture
def robustness():
    return RobustnessResult(
        clean_accuracy=0.92,
        accuracy={
            "gaussian_noise": [0.8, 0.7, 0.5, 0.3, 0.2],
            "contrast": [0.9, 0.85, 0.8, 0.6, 0.4],
        },
        severities=(1, 2, 3, 4, 5),
    )


def _render(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def test_reliability_diagram_has_bars_and_a_histogram_panel(calibration):
    fig = reliability_diagram(calibration, title="Val")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    top, bottom = fig.axes
    non_empty = sum(1 for c in calibration.bins.count if c > 0)
    assert len(top.patches) == 2 * non_empty  # accuracy bars + gap bars
    assert len(bottom.patches) == calibration.bins.n_bins
    assert [p.get_height() for p in bottom.patches] == calibration.bins.count
    assert f"ECE = {calibration.ece:.4f}" in top.get_title()
    assert top.get_title().startswith("Val")
    assert f"{calibration.ece:.4f}" in top.get_legend().get_title().get_text()
    assert _render(fig).startswith(b"\x89PNG")
    plt.close(fig)


def test_robustness_curve_has_one_line_per_corruption_and_a_dashed_clean_line(robustness):
    fig = robustness_curve(robustness)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert {"gaussian_noise", "contrast", "mean"} <= set(labels)
    clean = [line for line in ax.get_lines() if line.get_label().startswith("clean")]
    assert len(clean) == 1 and clean[0].get_linestyle() == "--"
    assert list(clean[0].get_ydata()) == [0.92, 0.92]
    noise = next(line for line in ax.get_lines() if line.get_label() == "gaussian_noise")
    assert list(noise.get_xdata()) == [1, 2, 3, 4, 5]
    assert ax.get_xticklabels()[0].get_text() == "clean"
    assert _render(fig).startswith(b"\x89PNG")
    plt.close(fig)


def test_figures_are_not_left_open_in_pyplot(calibration, robustness):
    plt.close("all")
    figures = [reliability_diagram(calibration), robustness_curve(robustness)]
    assert plt.get_fignums() == []
    for fig in figures:
        plt.close(fig)
    assert plt.get_fignums() == []


def _inside(fig: Figure) -> list[str]:
    """What is drawn outside the figure: fixed margins, no layout solver, so every
    label, title and legend must still fit."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    outside = []
    for ax in fig.axes:
        tight = ax.get_tightbbox(renderer)
        if not (
            box.x0 <= tight.x0 and tight.x1 <= box.x1 and box.y0 <= tight.y0 and tight.y1 <= box.y1
        ):
            outside.append(ax.get_title() or ax.get_ylabel())
    return outside


def test_every_label_of_the_reliability_robustness_and_adversarial_figures_fits(
    calibration, robustness
):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from tai.principles.security.adversarial import AdversarialResult
    from tai.report.figures.security import adversarial_curve

    robustness.accuracy["jpeg_compression"] = [0.9, 0.8, 0.7, 0.6, 0.5]  # the longest name
    attacks = [
        AdversarialResult("pgd", (0.05, 0.1), [0.5, 0.1], 0.97, 10, True),
        AdversarialResult("fgsm", (0.05, 0.1), [0.6, 0.3], 0.97, 1, False),
    ]
    for fig in (
        reliability_diagram(calibration, title="Reliability diagram, validation"),
        robustness_curve(robustness),
        adversarial_curve(attacks),
    ):
        FigureCanvasAgg(fig)
        assert _inside(fig) == []
