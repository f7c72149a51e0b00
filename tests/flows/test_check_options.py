"""The evaluation's budgets follow TAI_TAI_BUDGET."""

from __future__ import annotations

import pytest

from flows.preflight import check_options
from infra.settings import load_settings
from tai.evaluation.registry import evaluation_checks
from tai.principles.transparency.checks import ExplanationCheck


@pytest.mark.parametrize(
    ("budget", "quality", "reexplained"), [("512", 64, 32), ("4096", 512, 256), ("8", 16, 8)]
)
def test_the_explanation_check_samples_follow_the_budget(
    tmp_path, monkeypatch, budget, quality, reexplained
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAI_TAI_BUDGET", budget)
    options = check_options(load_settings())

    (check,) = [c for c in evaluation_checks(options) if isinstance(c, ExplanationCheck)]
    assert (check.quality_budget, check.reexplain_budget) == (quality, reexplained)
