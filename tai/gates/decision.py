"""Judging a TAI report against a gate policy: one result per gate, explained in one line.

An absolute gate judges a metric's point value or a bound of its confidence interval; a
champion gate judges a bound of the paired difference ``challenger - champion``. A gate on
a check that cannot apply to this model is skipped with the reason, never failed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from tai.gates.policy import ChampionGate, Gate, GatePolicy
from tai.gates.significance import PairedDifference

NO_CHAMPION = "no champion yet: judged on absolute gates only"


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate.

    ``value`` is the number judged against ``op threshold``: the metric's point value, a
    bound of its interval (``use``), or, for a comparison with the champion
    (``compare="champion"``), a bound of the difference ``challenger - champion``. ``point``
    is then the point estimate (of the metric, or of the difference) and ``lower`` and
    ``upper`` the interval at level ``confidence``. ``note`` says why a gate failed without
    being judged (a bound or comparison the evaluation did not supply).
    """

    metric: str
    op: str
    threshold: float
    value: float
    passed: bool
    skipped_because: str = ""
    use: str = "point"
    point: float = math.nan
    confidence: float = math.nan
    lower: float = math.nan
    upper: float = math.nan
    compare: str = ""
    requirement: str = ""
    margin: float = math.nan
    p_value: float = math.nan
    test: str = ""
    champion_value: float = math.nan
    challenger_value: float = math.nan
    note: str = ""

    @property
    def label(self) -> str:
        """What the gate judges, e.g. ``ece upper 95% bound`` or ``accuracy vs champion``."""
        if self.compare:
            return f"{self.metric} vs {self.compare}"
        if self.use != "point":
            return f"{self.metric} {self.use} {_percent(self.confidence)} bound"
        return self.metric

    @property
    def key(self) -> str:
        """A short identifier, unique per metric and kind of gate (for tags)."""
        if self.compare:
            return f"{self.compare}.{self.metric}"
        return self.metric if self.use == "point" else f"{self.metric}.{self.use}"

    def explain(self) -> str:
        if self.skipped_because:
            return f"skipped: {self.label} ({self.skipped_because})"
        verdict = "pass" if self.passed else "FAIL"
        required = f"required {self.op} {self.threshold:g}"
        if self.compare:
            return f"{verdict}: {self._explain_comparison(required)}"
        point = f" (point {self.point:.4f})" if self.use != "point" else ""
        if self.note:
            return f"{verdict}: {self.label} {self.note}{point} ({required})"
        return f"{verdict}: {self.label} = {self.value:.4f}{point} ({required})"

    def _explain_comparison(self, required: str) -> str:
        if self.requirement == "superior":
            required += ": significantly better"
        else:
            required += f": non-inferior within margin {self.margin:g}"
        if self.note:
            return f"{self.label}: {self.note} ({required})"
        p = f"; {self.test} p = {self.p_value:.3g}" if math.isfinite(self.p_value) else ""
        return (
            f"{self.label}: difference {self.point:+.4f} (challenger "
            f"{self.challenger_value:.4f}, champion {self.champion_value:.4f}), "
            f"{_percent(self.confidence)} interval [{self.lower:+.4f}, {self.upper:+.4f}], "
            f"{self.use} bound {self.value:+.4f} ({required}){p}"
        )


@dataclass(frozen=True)
class GateDecision:
    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def reasons(self) -> list[str]:
        """One line per failed gate; empty when every gate passed."""
        return [r.explain() for r in self.results if not r.passed]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "gates": [asdict(r) for r in self.results]}

    def markdown_table(self) -> str:
        rows = ["| gate | value | required | outcome |", "|---|---|---|---|"]
        rows += [
            f"| {r.label} | {r.value:.4f} | {r.op} {r.threshold:g} | {_outcome(r)} |"
            for r in self.results
        ]
        return "\n".join(rows)


def _outcome(result: GateResult) -> str:
    if result.skipped_because:
        return f"skipped ({result.skipped_because})"
    return "pass" if result.passed else "**FAIL**"


def _percent(confidence: float) -> str:
    return f"{100 * confidence:.4g}%"


def evaluate_gates(
    policy: GatePolicy,
    metrics: Mapping[str, float],
    *,
    not_applicable: Mapping[str, str] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    comparisons: Mapping[str, PairedDifference] | None = None,
) -> GateDecision:
    """Judge ``metrics`` against every gate.

    Args:
        policy: the gates.
        metrics: metric name -> value.
        not_applicable: metric name -> reason, for absolute gates that cannot apply to
            this model (a metric defined against the champion when there is none yet);
            they pass as skipped.
        bounds: metric name -> ``(lower, upper)`` of its confidence interval at level
            ``policy.confidence``, for the gates with ``use: lower | upper``. A gate whose
            bound is missing fails with an explanation.
        comparisons: metric name -> paired difference ``challenger - champion`` at level
            ``policy.confidence``, for the ``champion`` gates. ``None`` means there is no
            champion: those gates are skipped. A missing comparison, or one at another
            level, fails its gate with an explanation.

    Raises:
        ValueError: a bound is not a ``(lower, upper)`` pair with ``lower <= upper``.
        KeyError: a gate's metric is neither in ``metrics`` nor in ``not_applicable``: a
            name that drifted between the registry and a check, never a model's failure.
    """
    skip = not_applicable or {}
    absent = sorted({g.metric for g in policy.gates} - set(metrics) - set(skip))
    if absent:
        raise KeyError(
            f"the evaluation reported no value for {', '.join(map(repr, absent))}, which the "
            "policy gates on; every check must report each metric it declares"
        )
    supplied = _checked_bounds(bounds or {})
    results = [_judge_gate(g, metrics, skip, supplied, policy.confidence) for g in policy.gates]
    results += [_judge_comparison(g, comparisons, policy.confidence) for g in policy.champion]
    return GateDecision(tuple(results))


def _checked_bounds(bounds: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    checked = {}
    for metric, pair in bounds.items():
        try:
            lower, upper = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(
                f"bounds[{metric!r}] must be a (lower, upper) pair of numbers, got {pair!r}"
            ) from None
        if lower > upper:
            raise ValueError(
                f"bounds[{metric!r}] = ({lower}, {upper}) has lower > upper; pass (lower, upper)"
            )
        checked[metric] = (lower, upper)
    return checked


def _judge_gate(
    gate: Gate,
    metrics: Mapping[str, float],
    skip: Mapping[str, str],
    bounds: Mapping[str, tuple[float, float]],
    confidence: float,
) -> GateResult:
    point = float(metrics.get(gate.metric, math.nan))  # NaN only when skipped
    reason = skip.get(gate.metric, "")
    if gate.use == "point":
        passed = bool(reason) or gate.passes(point)
        return GateResult(gate.metric, gate.op, gate.threshold, point, passed, reason)
    common = {"use": gate.use, "point": point, "confidence": confidence}
    if reason:
        return GateResult(gate.metric, gate.op, gate.threshold, math.nan, True, reason, **common)
    if gate.metric not in bounds:
        return GateResult(
            gate.metric,
            gate.op,
            gate.threshold,
            math.nan,
            False,
            note="was not supplied by the evaluation",
            **common,
        )
    lower, upper = bounds[gate.metric]
    value = lower if gate.use == "lower" else upper
    return GateResult(
        gate.metric,
        gate.op,
        gate.threshold,
        value,
        gate.passes(value),
        lower=lower,
        upper=upper,
        **common,
    )


def _judge_comparison(
    gate: ChampionGate,
    comparisons: Mapping[str, PairedDifference] | None,
    confidence: float,
) -> GateResult:
    common = {
        "use": gate.use,
        "confidence": confidence,
        "compare": "champion",
        "requirement": gate.require,
        "margin": gate.margin,
    }
    head = (gate.metric, gate.op, gate.threshold)
    if comparisons is None:
        return GateResult(*head, math.nan, True, NO_CHAMPION, **common)
    comparison = comparisons.get(gate.metric)
    if comparison is None:
        note = "no paired comparison with the champion was supplied"
        return GateResult(*head, math.nan, False, note=note, **common)
    if not math.isclose(comparison.confidence, confidence):
        note = (
            f"the paired interval was computed at {_percent(comparison.confidence)}, but the "
            f"policy asks {_percent(confidence)}"
        )
        return GateResult(*head, math.nan, False, note=note, **common)
    value = comparison.lower if gate.use == "lower" else comparison.upper
    return GateResult(
        *head,
        value,
        gate.passes(value),
        point=comparison.diff,
        lower=comparison.lower,
        upper=comparison.upper,
        p_value=comparison.p_value,
        test=comparison.test,
        champion_value=comparison.value_a,
        challenger_value=comparison.value_b,
        **common,
    )


def evaluate_monitoring(
    policy: GatePolicy,
    metrics: Mapping[str, float],
    *,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    not_applicable: Mapping[str, str] | None = None,
) -> GateDecision:
    """Judge a production batch's monitoring metrics against the ``monitoring:`` rules:
    a rule that fails is an alarm (see :func:`evaluate_gates` for the arguments)."""
    rules = GatePolicy(
        version=policy.version,
        gates=policy.monitoring,
        sha256=policy.sha256,
        source=policy.source,
        confidence=policy.confidence,
    )
    return evaluate_gates(rules, metrics, not_applicable=not_applicable, bounds=bounds)
