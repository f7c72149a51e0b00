"""The table of every metric, generated from the registry (the README's metric table)."""

from __future__ import annotations

from tai.check import Principle
from tai.evaluation.registry import CheckOptions, all_checks

# Placeholders for the metrics whose names depend on the settings.
_DOC_OPTIONS = CheckOptions(corruptions=("<corruption>",), severities=("<k>",), epsilons=(0.05,))
_ARROWS = {"higher": "↑", "lower": "↓", "": ""}


def metrics_markdown() -> str:
    """A markdown table: principle, stage, metric, direction, meaning, per declared metric.

    A metric's ``_lower`` and ``_upper`` companions share its row; names that depend on
    the settings show their pattern (``<corruption>_s<k>``, ``pgd_accuracy_eps_<ε>``).
    """
    rows = [
        "| principle | stage | metric | better | what it measures |",
        "|---|---|---|---|---|",
    ]
    for principle in Principle:
        for check in all_checks(_DOC_OPTIONS):
            if check.principle is not principle:
                continue
            names = set(check.metric_names)
            for spec in check.metric_specs():
                if (
                    spec.name.endswith(("_lower", "_upper"))
                    and spec.name.rsplit("_", 1)[0] in names
                ):
                    continue
                notes = []
                if f"{spec.name}_lower" in names:
                    notes.append(f"also `{spec.name}_lower`, `{spec.name}_upper`")
                if spec.bounded:
                    notes.append("gate on a confidence bound")
                if spec.comparable:
                    notes.append("comparable with the champion")
                if spec.needs_baseline:
                    notes.append("needs an earlier version")
                name = spec.name.replace("eps_0p05", "eps_<ε>")
                what = spec.description.replace("ε=0.05", "ε").replace("0.05", "ε")
                extra = f" ({'; '.join(notes)})" if notes else ""
                rows.append(
                    f"| {principle.title} | {check.stage.value} | `{name}` | "
                    f"{_ARROWS[spec.direction]} | {what}{extra} |"
                )
    return "\n".join(rows)
