"""From requirements to gates: the policy a requirements file demands, and its enforcement.

:func:`derive` reads a :class:`~tai.gates.requirements.Requirements` and returns the gates,
champion comparisons, approval, confidence level and monitoring alarm rules it demands
(:class:`DerivedPolicy`); :func:`derive_policy` writes them as the YAML text of a gate
policy with a ``why:`` on every gate that names the requirement it comes from.
:func:`check_policy_against` refuses a policy looser than the requirements demand (one
line per shortfall, naming the requirement it breaks); a stricter policy passes.
:func:`policy_diff` says what deriving again would change against the current policy.

The table. For each principle and protection need, the gates that are mandatory: a
threshold on a metric's point value, or on a bound of its confidence interval (``lower``,
``upper``). A higher need keeps every gate of the lower one, at a threshold at least as
strict. ``low`` gates only reliability and fairness (a classifier that misreads, or that
fails one class, helps nobody); the other principles are then reported in the trust
report but not gated. The thresholds are set so that the demo's small CNN on MNIST (after
its data change: accuracy 0.983, upper 95% bound of ECE 0.018, lower bound of the worst
class's accuracy 0.92, accuracy under corruption 0.79, under PGD at eps 0.05 0.90,
membership-inference advantage 0.02, coverage 0.965 at 0.3% selective risk) passes every
``medium`` gate; ``high`` is meant to be hard.

.. derivation-table:begin

=============  ======  ==========  ================================================================
principle      need    section     rule
=============  ======  ==========  ================================================================
reliability    low     gates       accuracy >= 0.9
reliability    low     monitoring  estimated_accuracy >= 0.88 (upper bound)
reliability    medium  gates       accuracy >= 0.97
reliability    medium  gates       ece <= 0.03 (upper bound)
reliability    medium  gates       mean_corruption_accuracy >= 0.7
reliability    medium  gates       data_label_issue_rate <= 0.1
reliability    medium  gates       data_noise_sigma_shift <= 0.05
reliability    medium  gates       data_split_leakage <= 0
reliability    medium  champion    accuracy: non-inferior, margin 0.01
reliability    medium  monitoring  estimated_accuracy >= 0.95 (upper bound)
reliability    medium  monitoring  drift_p_value >= 0.001
reliability    high    gates       accuracy >= 0.97 (lower bound)
reliability    high    gates       ece <= 0.02 (upper bound)
reliability    high    gates       mean_corruption_accuracy >= 0.75
reliability    high    gates       <perturbation>_mean >= 0.6, each expected perturbation
reliability    high    gates       data_label_issue_rate <= 0.05
reliability    high    gates       data_noise_sigma_shift <= 0.05
reliability    high    gates       data_split_leakage <= 0
reliability    high    champion    accuracy: non-inferior, margin 0.005
reliability    high    monitoring  estimated_accuracy >= 0.97 (upper bound)
reliability    high    monitoring  drift_p_value >= 0.01
transparency   low     -           (trust report only)
transparency   medium  gates       deletion_auc <= 0.35
transparency   high    gates       deletion_auc <= 0.35 (upper bound)
transparency   high    gates       sanity_failures <= 0
fairness       low     gates       worst_class_accuracy >= 0.8
fairness       medium  gates       worst_class_accuracy >= 0.85 (lower bound)
fairness       high    gates       worst_class_accuracy >= 0.9 (lower bound)
fairness       high    gates       class_accuracy_gap <= 0.1 (upper bound)
fairness       low     gates       worst_group_accuracy >= 0.8, with a group column
fairness       medium  gates       worst_group_accuracy >= 0.85 (lower bound), with a group column
fairness       high    gates       worst_group_accuracy >= 0.9 (lower bound), with a group column
fairness       high    gates       group_error_rate_gap <= 0.1 (upper bound), with a group column
privacy        low     -           (trust report only)
privacy        medium  gates       mia_advantage <= 0.1
privacy        high    gates       mia_advantage <= 0.05 (upper bound)
privacy        high    gates       mia_tpr_at_1pct_fpr <= 0.05
security       low     -           (trust report only)
security       medium  gates       pgd_accuracy_eps_0p05 >= 0.8
security       high    gates       pgd_accuracy_eps_0p05 >= 0.85
security       high    gates       pgd_accuracy_eps_0p1 >= 0.5
autonomy       low     -           (trust report only)
autonomy       medium  gates       coverage_at_threshold >= 0.9
autonomy       medium  gates       selective_risk_at_threshold <= 0.01
autonomy       medium  monitoring  deferral_p_value >= 0.001
autonomy       high    gates       coverage_at_threshold >= 0.9
autonomy       high    gates       selective_risk_at_threshold <= 0.005
autonomy       high    monitoring  deferral_p_value >= 0.01
autonomy       high    approval    required
=============  ======  ==========  ================================================================

.. derivation-table:end

Across principles:

- ``confidence``: 0.99 for ``risk.class: high``, else 0.95 (the level of every interval
  the bounds and the champion comparisons read).
- ``approval: required`` when ``risk.class`` is ``high`` (EU AI Act Art. 14), the autonomy
  need is ``high``, or ``oversight.mode`` is ``human-in-the-loop``.
- ``oversight.mode: human-on-the-loop``: the person on the loop needs alarms, so the
  monitoring rules ``drift_p_value >= 0.001`` and ``deferral_p_value >= 0.001`` are
  mandatory whatever the needs.
- ``perturbations`` are the robustness check's corruption list: ``mean_corruption_accuracy``
  is their mean, and at a high reliability need each one is gated alone.

Where two requirements demand a gate on the same metric and bound, the stricter threshold
is kept and the ``why`` names both. Every metric comes from the registry
(:func:`tai.evaluation.registry.metric_specs`, monitoring metrics included): a needed
metric no check declares, a ``min`` on a lower-is-better metric (or the reverse), or a
bound the check does not compute raise :class:`DerivationError` naming the requirement.

Looseness. A policy gate satisfies a required one when it judges the same metric in the
same direction, at a threshold at least as strict (a ``min`` no lower, a ``max`` no
higher), on a number at least as conservative: for a ``min`` the lower bound is below the
point value, which is below the upper bound, so ``use: lower`` satisfies a required
``point`` or ``upper``, and ``point`` a required ``upper``; the reverse for ``max``. The
policy's confidence must be at least the required one; a required lenient bound (the
monitoring rule's ``use: upper`` with ``min``) judged at a higher confidence is wider,
hence looser, and is then satisfied only by ``point`` or the other bound. A champion
comparison is satisfied by one on the same metric with a margin no larger, or by
``require: superior``; a required approval only by ``approval: {required: true}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml

from tai.check import MetricSpec, Principle
from tai.gates.policy import (
    DEFAULT_APPROVAL_TIMEOUT_S,
    ChampionGate,
    Gate,
    GatePolicy,
    PolicyError,
)
from tai.gates.requirements import LEVELS, Requirements, RequirementsError, quote
from tai.gates.schema import schema_errors as policy_schema_errors

#: Confidence level of every interval, by whether the risk class is high.
CONFIDENCE = 0.95
HIGH_RISK_CONFIDENCE = 0.99
#: The threshold every expected perturbation's mean accuracy must reach at a high need.
PERTURBATION_MIN_ACCURACY = 0.60
#: The table's stand-in for one gate per expected perturbation.
PER_PERTURBATION = "<perturbation>_mean"
#: The monitoring rules a human on the loop needs (alarms), whatever the needs.
ON_THE_LOOP_P_VALUE = 0.001


class DerivationError(RequirementsError):
    """The requirements demand a gate on a metric the checks do not declare, or in a way
    the registry contradicts (a direction, a confidence bound)."""


class LoosePolicyError(PolicyError):
    """The gate policy is looser than the requirements demand; one line per shortfall."""


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Rule:
    """One row of the table: a gate (``section="gates"``), a monitoring alarm rule
    (``"monitoring"``) or a champion comparison (``"champion"``: ``threshold`` is the
    non-inferiority margin, ``bound`` and ``use`` unused)."""

    metric: str
    bound: str
    threshold: float
    use: str = "point"
    section: str = "gates"
    what: str = ""

    def text(self) -> str:
        if self.section == "champion":
            return f"{self.metric}: non-inferior, margin {_num(self.threshold)}"
        op = ">=" if self.bound == "min" else "<="
        use = f" ({self.use} bound)" if self.use != "point" else ""
        return f"{self.metric} {op} {_num(self.threshold)}{use}"


def _min(metric: str, t: float, what: str, use: str = "point", section: str = "gates") -> Rule:
    return Rule(metric, "min", t, use, section, what)


def _max(metric: str, t: float, what: str, use: str = "point", section: str = "gates") -> Rule:
    return Rule(metric, "max", t, use, section, what)


def _champion(metric: str, margin: float, what: str) -> Rule:
    return Rule(metric, "", margin, "point", "champion", what)


_ACCURACY = "the share of test images read right"
_ECE = "confidence must be usable as a probability by the people who act on it"
_CORRUPT = "accuracy under the expected perturbations, mean over corruptions and severities"
_LABELS = "a training commit with many suspect labels needs a review before it trains"
_NOISE = "a jump in the data's noise level since the last model needs a look first"
_LEAKAGE = "no test image may also be a training image (the same bytes or a near-duplicate)"
_CHAMPION = "a retrained model must not lose accuracy against the champion beyond the margin"
_ESTIMATED = "alarm when even the upper bound of the unlabeled batch's estimated accuracy is low"
_DRIFT = "alarm when the production inputs drift from the training data"
_DEFERRAL = "alarm when the model defers significantly more images to a person than expected"
_DELETION = "explanations must point at pixels the model really uses"
_SANITY = "no explanation method may survive randomising the model (Adebayo et al.)"
_WORST_CLASS = "no class may be served much worse than the others"
_CLASS_GAP = "the best and the worst class must be close"
_WORST_GROUP = "no group of the protected column may be served much worse than the others"
_GROUP_GAP = "the error rates of the protected groups must be close"
_MIA = "an attacker must not tell training images from others much better than chance"
_MIA_TPR = "few training images identifiable at 1% false positives"
_PGD = "small adversarial perturbations must leave most answers right"
_COVERAGE = "the model answers most images itself: the deferred ones stay a workload people manage"
_SELECTIVE = "the answers the model gives on its own are rarely wrong"

TABLE: dict[str, dict[str, tuple[Rule, ...]]] = {
    "reliability": {
        "low": (
            _min("accuracy", 0.90, _ACCURACY),
            _min("estimated_accuracy", 0.88, _ESTIMATED, "upper", "monitoring"),
        ),
        "medium": (
            _min("accuracy", 0.97, _ACCURACY),
            _max("ece", 0.03, _ECE, "upper"),
            _min("mean_corruption_accuracy", 0.70, _CORRUPT),
            _max("data_label_issue_rate", 0.10, _LABELS),
            _max("data_noise_sigma_shift", 0.05, _NOISE),
            _max("data_split_leakage", 0, _LEAKAGE),
            _champion("accuracy", 0.01, _CHAMPION),
            _min("estimated_accuracy", 0.95, _ESTIMATED, "upper", "monitoring"),
            _min("drift_p_value", 0.001, _DRIFT, section="monitoring"),
        ),
        "high": (
            _min("accuracy", 0.97, _ACCURACY, "lower"),
            _max("ece", 0.02, _ECE, "upper"),
            _min("mean_corruption_accuracy", 0.75, _CORRUPT),
            _min(
                PER_PERTURBATION,
                PERTURBATION_MIN_ACCURACY,
                "accuracy under {p}, mean over its severities",
            ),
            _max("data_label_issue_rate", 0.05, _LABELS),
            _max("data_noise_sigma_shift", 0.05, _NOISE),
            _max("data_split_leakage", 0, _LEAKAGE),
            _champion("accuracy", 0.005, _CHAMPION),
            _min("estimated_accuracy", 0.97, _ESTIMATED, "upper", "monitoring"),
            _min("drift_p_value", 0.01, _DRIFT, section="monitoring"),
        ),
    },
    "transparency": {
        "low": (),
        "medium": (_max("deletion_auc", 0.35, _DELETION),),
        "high": (
            _max("deletion_auc", 0.35, _DELETION, "upper"),
            _max("sanity_failures", 0, _SANITY),
        ),
    },
    "fairness": {
        "low": (_min("worst_class_accuracy", 0.80, _WORST_CLASS),),
        "medium": (_min("worst_class_accuracy", 0.85, _WORST_CLASS, "lower"),),
        "high": (
            _min("worst_class_accuracy", 0.90, _WORST_CLASS, "lower"),
            _max("class_accuracy_gap", 0.10, _CLASS_GAP, "upper"),
        ),
    },
    "privacy": {
        "low": (),
        "medium": (_max("mia_advantage", 0.10, _MIA),),
        "high": (
            _max("mia_advantage", 0.05, _MIA, "upper"),
            _max("mia_tpr_at_1pct_fpr", 0.05, _MIA_TPR),
        ),
    },
    "security": {
        "low": (),
        "medium": (_min("pgd_accuracy_eps_0p05", 0.80, _PGD),),
        "high": (
            _min("pgd_accuracy_eps_0p05", 0.85, _PGD),
            _min("pgd_accuracy_eps_0p1", 0.50, _PGD),
        ),
    },
    "autonomy": {
        "low": (),
        "medium": (
            _min("coverage_at_threshold", 0.90, _COVERAGE),
            _max("selective_risk_at_threshold", 0.01, _SELECTIVE),
            _min("deferral_p_value", 0.001, _DEFERRAL, section="monitoring"),
        ),
        "high": (
            _min("coverage_at_threshold", 0.90, _COVERAGE),
            _max("selective_risk_at_threshold", 0.005, _SELECTIVE),
            _min("deferral_p_value", 0.01, _DEFERRAL, section="monitoring"),
        ),
    },
}

#: With ``protected_groups.column``, in addition to the fairness rows.
GROUP_TABLE: dict[str, tuple[Rule, ...]] = {
    "low": (_min("worst_group_accuracy", 0.80, _WORST_GROUP),),
    "medium": (_min("worst_group_accuracy", 0.85, _WORST_GROUP, "lower"),),
    "high": (
        _min("worst_group_accuracy", 0.90, _WORST_GROUP, "lower"),
        _max("group_error_rate_gap", 0.10, _GROUP_GAP, "upper"),
    ),
}

#: Need levels at which a person approves every promotion, per principle.
APPROVAL_LEVELS: dict[str, tuple[str, ...]] = {"autonomy": ("high",)}


def derivation_table() -> str:
    """The table of the module docstring, generated from :data:`TABLE` (a test keeps the
    two equal)."""
    rows: list[tuple[str, str, str, str]] = []
    for principle in TABLE:
        for level in LEVELS:
            rules = TABLE[principle][level]
            for rule in rules:
                each = ", each expected perturbation" if rule.metric == PER_PERTURBATION else ""
                rows.append((principle, level, rule.section, rule.text() + each))
            if level in APPROVAL_LEVELS.get(principle, ()):
                rows.append((principle, level, "approval", "required"))
            if not rules:
                rows.append((principle, level, "-", "(trust report only)"))
        if principle == "fairness":
            for level in LEVELS:
                for rule in GROUP_TABLE[level]:
                    rows.append((principle, level, "gates", f"{rule.text()}, with a group column"))
    widths = (13, 6, 10, 64)
    rule_line = "  ".join("=" * w for w in widths)
    head = "  ".join(
        h.ljust(w) for h, w in zip(("principle", "need", "section", "rule"), widths, strict=True)
    )
    body = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join([rule_line, head.rstrip(), rule_line, *body, rule_line])


# ------------------------------------------------------------------------- derivation


@dataclass(frozen=True)
class Source:
    """A requirement a rule comes from: its field, what it states, and its reason."""

    field: str  # e.g. "needs.reliability", "risk.class", "oversight.mode"
    statement: str  # e.g. "reliability need is medium"
    reason: str

    def cite(self) -> str:
        """``reliability need is medium (requirements needs.reliability: 'A misread...')``."""
        return f"{self.statement} (requirements {self.field}: {quote(self.reason)})"


@dataclass(frozen=True)
class RequiredGate:
    """A gate (``section="gates"``) or monitoring alarm rule (``"monitoring"``) the
    requirements demand, with the requirements it comes from."""

    section: str
    metric: str
    bound: str  # "min" or "max"
    threshold: float
    use: str
    what: str
    sources: tuple[Source, ...]

    @property
    def op(self) -> str:
        return ">=" if self.bound == "min" else "<="

    def why(self) -> str:
        """The gate's ``why:``: what it protects and the requirements it comes from."""
        return f"{self.what}: {_cite(self.sources)}"

    def text(self) -> str:
        use = f" ({self.use} bound)" if self.use != "point" else ""
        return f"{self.metric} {self.op} {_num(self.threshold)}{use}"

    def flow(self) -> str:
        """The gate in YAML flow style, e.g. ``{metric: ece, max: 0.03, use: upper}``."""
        use = f", use: {self.use}" if self.use != "point" else ""
        return f"{{metric: {self.metric}, {self.bound}: {_num(self.threshold)}{use}}}"


@dataclass(frozen=True)
class RequiredComparison:
    """A champion comparison the requirements demand: non-inferior within ``margin``."""

    metric: str
    margin: float
    what: str
    sources: tuple[Source, ...]

    def why(self) -> str:
        return f"{self.what}: {_cite(self.sources)}"


@dataclass(frozen=True)
class DerivedPolicy:
    """Everything the requirements demand of a gate policy (see the module docstring).

    Attributes:
        confidence: the level every interval must have at least.
        gates: the mandatory absolute gates, in table order.
        champion: the mandatory champion comparisons.
        approval: whether a person must approve every promotion.
        monitoring: the mandatory monitoring alarm rules.
        confidence_sources, approval_sources: the requirements behind those two.
        requirements_source, requirements_sha256: the requirements file.
    """

    confidence: float
    gates: tuple[RequiredGate, ...]
    champion: tuple[RequiredComparison, ...]
    approval: bool
    monitoring: tuple[RequiredGate, ...]
    confidence_sources: tuple[Source, ...]
    approval_sources: tuple[Source, ...]
    requirements_source: str
    requirements_sha256: str

    def metrics(self) -> tuple[str, ...]:
        """Every metric a gate, comparison or rule names."""
        names = [g.metric for g in (*self.gates, *self.monitoring)]
        names += [c.metric for c in self.champion]
        return tuple(dict.fromkeys(names))


def derive(requirements: Requirements, specs: Mapping[str, MetricSpec]) -> DerivedPolicy:
    """What ``requirements`` demand of a gate policy (the table of the module docstring).

    Args:
        specs: every metric the checks declare, monitoring metrics included:
            ``metric_specs(options)`` of :mod:`tai.evaluation.registry` with the options of
            this configuration (its corruption list must hold the perturbations).

    Raises:
        DerivationError: a needed metric is not in ``specs``, or is declared with another
            direction or without the confidence bound the table judges.
    """
    r = requirements
    needs = {p.value: n for p, n in r.needs.items()}

    def need_source(principle: str) -> Source:
        title = Principle(principle).title
        return Source(
            f"needs.{principle}",
            f"{title} need is {needs[principle].level}",
            needs[principle].reason,
        )

    risk = Source("risk.class", f"risk class is {r.risk_class}", r.risk_reason)
    oversight = Source("oversight.mode", f"oversight is {r.oversight}", r.oversight_reason)
    groups = Source(
        "protected_groups.column", f"groups to protect: {r.group_column}", r.group_reason
    )
    perturbations = Source(
        "perturbations",
        f"expected perturbations are {', '.join(r.perturbations)}",
        "the domain's expected input perturbations",
    )

    collected: list[tuple[Rule, tuple[Source, ...]]] = []
    for principle, by_level in TABLE.items():
        level = needs[principle].level
        cited = (need_source(principle),)
        for rule in by_level[level]:
            if rule.metric != PER_PERTURBATION:
                collected.append((rule, cited))
                continue
            collected += [
                (
                    replace(rule, metric=f"{p}_mean", what=rule.what.format(p=p)),
                    (*cited, perturbations),
                )
                for p in r.perturbations
            ]
        if principle == "fairness" and r.group_column is not None:
            collected += [(rule, (*cited, groups)) for rule in GROUP_TABLE[level]]
    if r.oversight == "human-on-the-loop":
        collected += [
            (
                _min("drift_p_value", ON_THE_LOOP_P_VALUE, _DRIFT, section="monitoring"),
                (oversight,),
            ),
            (
                _min("deferral_p_value", ON_THE_LOOP_P_VALUE, _DEFERRAL, section="monitoring"),
                (oversight,),
            ),
        ]

    rules = _merge(collected)
    for rule, sources in rules:
        _check_rule(rule, sources, specs)

    approval_sources: list[Source] = []
    if r.risk_class == "high":
        approval_sources.append(
            replace(risk, statement="risk class is high (EU AI Act Art. 14: human oversight)")
        )
    for principle, levels in APPROVAL_LEVELS.items():
        if needs[principle].level in levels:
            approval_sources.append(need_source(principle))
    if r.oversight == "human-in-the-loop":
        approval_sources.append(oversight)

    def gate(rule: Rule, sources: tuple[Source, ...]) -> RequiredGate:
        return RequiredGate(
            rule.section,
            rule.metric,
            rule.bound,
            float(rule.threshold),
            rule.use,
            rule.what,
            sources,
        )

    return DerivedPolicy(
        confidence=HIGH_RISK_CONFIDENCE if r.risk_class == "high" else CONFIDENCE,
        gates=tuple(gate(rule, s) for rule, s in rules if rule.section == "gates"),
        champion=tuple(
            RequiredComparison(rule.metric, float(rule.threshold), rule.what, s)
            for rule, s in rules
            if rule.section == "champion"
        ),
        approval=bool(approval_sources),
        monitoring=tuple(gate(rule, s) for rule, s in rules if rule.section == "monitoring"),
        confidence_sources=(risk,),
        approval_sources=tuple(approval_sources),
        requirements_source=r.source,
        requirements_sha256=r.sha256,
    )


def _merge(
    collected: Iterable[tuple[Rule, tuple[Source, ...]]],
) -> list[tuple[Rule, tuple[Source, ...]]]:
    """One rule per (section, metric, bound, use): the strictest threshold, every source."""
    merged: dict[tuple[str, str, str, str], tuple[Rule, tuple[Source, ...]]] = {}
    for rule, sources in collected:
        key = (rule.section, rule.metric, rule.bound, rule.use)
        if key not in merged:
            merged[key] = (rule, sources)
            continue
        kept, kept_sources = merged[key]
        stricter = _stricter_threshold(rule, kept)
        first, second = (sources, kept_sources) if stricter else (kept_sources, sources)
        combined = tuple(dict.fromkeys((*first, *second)))
        merged[key] = (rule if stricter else kept, combined)
    return list(merged.values())


def _stricter_threshold(a: Rule, b: Rule) -> bool:
    """Whether ``a``'s threshold is strictly stricter than ``b``'s (same section, bound)."""
    if a.section == "champion" or a.bound == "max":
        return a.threshold < b.threshold
    return a.threshold > b.threshold


_MISSING_HINTS = (
    (
        "_mean",
        "the robustness check runs the corruptions of TAI_CORRUPTIONS; run the "
        "requirements' perturbations (Requirements.corruptions)",
    ),
    (
        "pgd_accuracy_eps_",
        "the adversarial check runs at the radii of TAI_ADVERSARIAL_EPSILONS; include 0.05 and 0.1",
    ),
    (
        "estimated_accuracy",
        "the monitoring stage declares it (tai.monitoring.checks); pass "
        "metric_specs() with the monitoring stage",
    ),
    (
        "drift_p_value",
        "the monitoring stage declares it (tai.monitoring.checks); pass "
        "metric_specs() with the monitoring stage",
    ),
    (
        "deferral_p_value",
        "the monitoring stage declares it (tai.monitoring.checks); pass "
        "metric_specs() with the monitoring stage",
    ),
)


def _check_rule(rule: Rule, sources: tuple[Source, ...], specs: Mapping[str, MetricSpec]) -> None:
    kind = {
        "gates": "a gate",
        "monitoring": "a monitoring rule",
        "champion": "a champion comparison",
    }[rule.section]
    where = f"cannot derive the policy: {_cite(sources)} demands {kind} on {rule.metric!r}"
    spec = specs.get(rule.metric)
    if spec is None:
        hint = next((h for key, h in _MISSING_HINTS if key in rule.metric), "")
        hint = f" ({hint})" if hint else ""
        raise DerivationError(
            f"{where}, which no check of this configuration declares{hint}; `tai metrics` "
            "lists the metrics there are"
        )
    if rule.section == "champion":
        if not spec.comparable:
            raise DerivationError(f"{where}, which cannot be compared with the champion")
        return
    want = "higher" if rule.bound == "min" else "lower"
    if spec.direction != want:
        have = f"a {spec.direction} value is better" if spec.direction else "it has no direction"
        raise DerivationError(
            f"{where} with `{rule.bound}`, but the registry says {have}; the derivation table "
            "(tai/gates/derivation.py) and the check disagree"
        )
    if rule.use != "point" and not spec.bounded:
        raise DerivationError(
            f"{where} judged on its {rule.use} confidence bound, which its check does not "
            "compute; the derivation table (tai/gates/derivation.py) and the check disagree"
        )


def _cite(sources: Iterable[Source]) -> str:
    return "; ".join(s.cite() for s in sources)


def _num(value: float) -> str:
    """A threshold as YAML reads it back as a number (no exponent: YAML 1.1 reads 1e-05 as
    text)."""
    value = float(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        text = f"{value:.15f}".rstrip("0")
    return text


def _str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def derive_policy(requirements: Requirements, specs: Mapping[str, MetricSpec]) -> str:
    """The YAML text of the gate policy ``requirements`` demand (see :func:`derive`), with a
    ``why:`` on every gate, comparison and rule naming the requirement it comes from.

    It parses with :func:`tai.gates.policy.parse_policy` (monitoring rules against the
    monitoring metrics) and passes :func:`check_policy_against` by construction.

    Raises:
        DerivationError: as :func:`derive`.
    """
    d = derive(requirements, specs)
    r = requirements
    lines = [
        f"# Gate policy derived from {r.source} (sha256 {r.sha256[:16]}) by",
        "# tai.gates.derivation. Change the requirements and derive again rather than",
        "# loosening a gate here: a policy looser than the requirements is refused.",
        f"# System: {' '.join(r.system.split())}. Risk class: {r.risk_class}.",
        "version: 1",
        f"# {_cite(d.confidence_sources)}",
        f"confidence: {_num(d.confidence)}",
        "gates:",
    ]
    lines += _render_gates(d.gates)
    if d.champion:
        lines += ["# Against the current champion, on the same test images", "champion:"]
        for c in d.champion:
            lines += [
                f"  - metric: {c.metric}",
                f"    margin: {_num(c.margin)}",
                f"    why: {_str(c.why())}",
            ]
    if d.approval:
        lines.append(f"# A person approves every promotion: {_cite(d.approval_sources)}")
    else:
        lines.append(
            "# No requirement demands a person's approval (risk class not high, autonomy need "
            "not high, no human in the loop)"
        )
    lines += [
        "approval:",
        f"  required: {'true' if d.approval else 'false'}",
        f"  timeout_s: {DEFAULT_APPROVAL_TIMEOUT_S}",
    ]
    if d.monitoring:
        lines += ["# Alarm rules on unlabeled production batches (tai monitor)", "monitoring:"]
        lines += _render_gates(d.monitoring)
    return "\n".join(lines) + "\n"


def _render_gates(gates: Iterable[RequiredGate]) -> list[str]:
    lines: list[str] = []
    heading = ""
    for g in gates:
        first = g.sources[0].statement
        if first != heading:
            lines.append(f"  # {first}")
            heading = first
        lines += [f"  - metric: {g.metric}", f"    {g.bound}: {_num(g.threshold)}"]
        if g.use != "point":
            lines.append(f"    use: {g.use}")
        lines.append(f"    why: {_str(g.why())}")
    return lines


# ------------------------------------------------------------------------- looseness

# How conservative a judged number is, for a `min` gate: lower bound <= point <= upper.
_RANK = {"min": {"upper": 0, "point": 1, "lower": 2}, "max": {"lower": 0, "point": 1, "upper": 2}}
_LENIENT = {"min": "upper", "max": "lower"}


def _satisfies(
    gate: Gate, required: RequiredGate, confidence: float, required_confidence: float
) -> bool:
    """Whether passing ``gate`` (at ``confidence``) implies passing ``required``."""
    if gate.metric != required.metric or gate.bound != required.bound:
        return False
    if required.bound == "min" and gate.threshold < required.threshold:
        return False
    if required.bound == "max" and gate.threshold > required.threshold:
        return False
    rank = _RANK[required.bound]
    if rank[gate.use] != rank[required.use]:
        return rank[gate.use] > rank[required.use]
    # The same kind of number; a lenient bound is wider, so looser, at a higher level. (A
    # conservative bound at a lower level is reported once, by the confidence check.)
    return gate.use != _LENIENT[required.bound] or confidence <= required_confidence


def check_policy_against(
    requirements: Requirements, policy: GatePolicy, specs: Mapping[str, MetricSpec]
) -> list[str]:
    """The ways ``policy`` is looser than ``requirements`` demand, one line each (empty
    when it is at least as strict).

    Each line names the policy file, what is missing or too loose, what is required, and
    the requirement it breaks: a mandatory gate, comparison or monitoring rule missing; a
    weaker threshold; a point value or a lenient bound where a conservative bound is
    required; a lower confidence level; approval not required where demanded. Gates,
    comparisons and rules beyond those demanded, and stricter thresholds, pass.

    Raises:
        DerivationError: as :func:`derive`.
    """
    d = derive(requirements, specs)
    src = policy.source
    problems: list[str] = []
    if policy.confidence < d.confidence:
        problems.append(
            f"{src}: `confidence: {_num(policy.confidence)}` must be >= "
            f"{_num(d.confidence)}: {_cite(d.confidence_sources)}"
        )
    problems += _gate_problems(src, "gate", policy.gates, d.gates, policy.confidence, d)
    for required in d.champion:
        found = [c for c in policy.champion if c.metric == required.metric]
        if not found:
            problems.append(
                f"{src}: champion comparison on {required.metric} missing; add `{{metric: "
                f"{required.metric}, margin: {_num(required.margin)}}}`: {_cite(required.sources)}"
            )
        elif not any(_compares_strictly(c, required) for c in found):
            c = found[0]
            problems.append(
                f"{src}: champion comparison on {required.metric} must have margin <= "
                f"{_num(required.margin)} (or `require: superior`), found `margin: "
                f"{_num(c.margin)}`: {_cite(required.sources)}"
            )
    if d.approval and not policy.approval.required:
        problems.append(
            f"{src}: approval must be `required: true`, found `required: false`: "
            f"{_cite(d.approval_sources)}"
        )
    problems += _gate_problems(
        src, "monitoring rule", policy.monitoring, d.monitoring, policy.confidence, d
    )
    return problems


def _compares_strictly(gate: ChampionGate, required: RequiredComparison) -> bool:
    return gate.require == "superior" or gate.margin <= required.margin


def _gate_problems(
    src: str,
    kind: str,
    gates: tuple[Gate, ...],
    required_gates: tuple[RequiredGate, ...],
    confidence: float,
    d: DerivedPolicy,
) -> list[str]:
    problems = []
    for required in required_gates:
        found = [g for g in gates if g.metric == required.metric]
        if any(_satisfies(g, required, confidence, d.confidence) for g in found):
            continue
        cite = _cite(required.sources)
        if not found:
            problems.append(
                f"{src}: {kind} on {required.metric} missing; add `{required.flow()}`: {cite}"
            )
            continue
        same_bound = [g for g in found if g.bound == required.bound]
        have = ", ".join(_gate_flow(g) for g in (same_bound or found))
        use = (
            f"`use: {required.use}` (or a stricter bound)"
            if required.use != "point"
            else "the point value (or a stricter bound)"
        )
        if required.use == _LENIENT[required.bound]:
            use = f"`use: {required.use}` (or point, or the other bound)"
        note = ""
        if any(
            g.use == required.use == _LENIENT[required.bound] and confidence > d.confidence
            for g in same_bound
        ):
            note = (
                f"; `use: {required.use}` at confidence {_num(confidence)} is wider than at "
                f"{_num(d.confidence)}, so looser: use `use: point`"
            )
        problems.append(
            f"{src}: {kind} on {required.metric} must be {use} with {required.bound} "
            f"{required.op} {_num(required.threshold)}, found `{have}`{note}: {cite}"
        )
    return problems


def _gate_flow(gate: Gate) -> str:
    use = f", use: {gate.use}" if gate.use != "point" else ""
    return f"{gate.bound}: {_num(gate.threshold)}{use}"


def assert_policy_meets(
    requirements: Requirements, policy: GatePolicy, specs: Mapping[str, MetricSpec]
) -> None:
    """Raise unless ``policy`` is at least as strict as ``requirements`` demand.

    Raises:
        LoosePolicyError: one line per shortfall (:func:`check_policy_against`).
        DerivationError: as :func:`derive`.
    """
    problems = check_policy_against(requirements, policy, specs)
    if problems:
        raise LoosePolicyError("\n".join(problems))


# ------------------------------------------------------------------------------- diff


def policy_diff(
    current_policy_text: str,
    derived_policy_text: str,
    *,
    current_source: str = "current policy",
    derived_source: str = "derived policy",
) -> str:
    """What replacing the current policy by the derived one would change, one line each:
    ``+`` a gate, comparison or rule added, ``-`` removed, ``~`` changed (marked stricter,
    looser or different). ``why:`` texts are not compared.

    Raises:
        PolicyError: a text is not valid YAML or not a policy document (schema).
    """
    current = _load(current_policy_text, current_source)
    derived = _load(derived_policy_text, derived_source)
    lines: list[str] = []
    c_conf = float(current.get("confidence", CONFIDENCE))
    d_conf = float(derived.get("confidence", CONFIDENCE))
    if c_conf != d_conf:
        verdict = "stricter" if d_conf > c_conf else "looser"
        lines.append(f"~ confidence: {_num(c_conf)} -> {_num(d_conf)} ({verdict})")
    for section, label in (("gates", "gate"), ("monitoring", "monitoring rule")):
        lines += _diff_gates(current.get(section, []), derived.get(section, []), label)
    lines += _diff_champion(current.get("champion", []), derived.get("champion", []))
    c_app, d_app = current.get("approval", {}), derived.get("approval", {})
    if bool(c_app.get("required", False)) != bool(d_app.get("required", False)):
        old, new = bool(c_app.get("required", False)), bool(d_app.get("required", False))
        verdict = "stricter" if new else "looser"
        lines.append(f"~ approval.required: {str(old).lower()} -> {str(new).lower()} ({verdict})")
    c_to = c_app.get("timeout_s", DEFAULT_APPROVAL_TIMEOUT_S)
    d_to = d_app.get("timeout_s", DEFAULT_APPROVAL_TIMEOUT_S)
    if c_to != d_to:
        lines.append(f"~ approval.timeout_s: {c_to} -> {d_to}")
    if not lines:
        return (
            f"no change: {derived_source} has the gates, comparisons, approval and monitoring "
            f"rules of {current_source}"
        )
    return "\n".join([f"{derived_source} against {current_source}:", *lines])


def _load(text: str, source: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # One line: the parser's message spans several (the offending line and a caret).
        problem = " ".join(str(exc).split())
        raise PolicyError(f"{source}: not valid YAML ({problem}); fix the file's syntax") from None
    errors = policy_schema_errors(doc, source)
    if errors:
        raise PolicyError("\n".join(errors))
    return doc


def _raw_gate(raw: dict[str, Any]) -> Gate:
    bound = "min" if "min" in raw else "max"
    return Gate(raw["metric"], bound, float(raw[bound]), use=raw.get("use", "point"))


def _gate_text(g: Gate) -> str:
    use = f" ({g.use} bound)" if g.use != "point" else ""
    return f"{g.metric} {g.op} {_num(g.threshold)}{use}"


def _as_required(g: Gate) -> RequiredGate:
    return RequiredGate("gates", g.metric, g.bound, g.threshold, g.use, "", ())


def _diff_gates(current: list[dict], derived: list[dict], label: str) -> list[str]:
    old = [_raw_gate(g) for g in current]
    new = [_raw_gate(g) for g in derived]
    lines: list[str] = []
    for metric in dict.fromkeys([g.metric for g in old] + [g.metric for g in new]):
        o = [g for g in old if g.metric == metric]
        n = [g for g in new if g.metric == metric]
        for g in list(o):  # unchanged ones
            if g in n:
                o.remove(g)
                n.remove(g)
        pairs = []
        for g in list(o):  # same kind of number: a changed threshold
            match = next((h for h in n if h.bound == g.bound and h.use == g.use), None)
            if match is not None:
                pairs.append((g, match))
                o.remove(g)
                n.remove(match)
        while o and n:
            pairs.append((o.pop(0), n.pop(0)))
        for before, after in pairs:
            lines.append(
                f"~ {label} {_gate_text(before)} -> {_gate_text(after)} ({_verdict(before, after)})"
            )
        lines += [f"- {label} {_gate_text(g)} (not demanded by the requirements)" for g in o]
        lines += [f"+ {label} {_gate_text(g)}" for g in n]
    return lines


def _verdict(before: Gate, after: Gate) -> str:
    if _satisfies(after, _as_required(before), 1.0, 1.0):
        return "stricter"
    if _satisfies(before, _as_required(after), 1.0, 1.0):
        return "looser"
    return "different"


def _diff_champion(current: list[dict], derived: list[dict]) -> list[str]:
    def spec(raw: dict) -> tuple[str, float]:
        require = raw.get("require", "non-inferior")
        return require, float(raw.get("margin", 0.0))

    def text(metric: str, s: tuple[str, float]) -> str:
        return f"{metric} superior" if s[0] == "superior" else f"{metric} margin {_num(s[1])}"

    old = {g["metric"]: spec(g) for g in current}
    new = {g["metric"]: spec(g) for g in derived}
    lines = []
    for metric in dict.fromkeys([*old, *new]):
        if metric not in new:
            lines.append(
                f"- champion comparison {text(metric, old[metric])} (not demanded by the "
                "requirements)"
            )
        elif metric not in old:
            lines.append(f"+ champion comparison {text(metric, new[metric])}")
        elif old[metric] != new[metric]:
            a, b = old[metric], new[metric]
            if b[0] == "superior" or (a[0] != "superior" and b[1] < a[1]):
                verdict = "stricter"
            else:
                verdict = "looser"
            lines.append(
                f"~ champion comparison {text(metric, a)} -> {text(metric, b)} ({verdict})"
            )
    return lines


# ----------------------------------------------------------------------------- report


def report_section(
    requirements: Requirements,
    specs: Mapping[str, MetricSpec],
    policy: GatePolicy | None = None,
) -> dict[str, Any]:
    """The JSON-ready requirements section of the trust report: the requirements
    (:meth:`Requirements.summary`), what they demand (each gate with its rule and the
    requirements it comes from) and, with ``policy``, whether the policy meets them.

    Raises:
        DerivationError: as :func:`derive`.
    """
    d = derive(requirements, specs)

    def row(section: str, metric: str, rule: str, sources: tuple[Source, ...]) -> dict[str, Any]:
        return {
            "section": section,
            "metric": metric,
            "rule": rule,
            "requirements": [s.field for s in sources],
            "why": _cite(sources),
        }

    rows = [row("gates", g.metric, g.text(), g.sources) for g in d.gates]
    rows += [
        row("champion", c.metric, f"{c.metric}: non-inferior, margin {_num(c.margin)}", c.sources)
        for c in d.champion
    ]
    rows += [row("monitoring", g.metric, g.text(), g.sources) for g in d.monitoring]
    if d.approval:
        rows.append(row("approval", "", "required", d.approval_sources))
    section: dict[str, Any] = {
        **requirements.summary(),
        "confidence": d.confidence,
        "approval_required": d.approval,
        "demanded": rows,
    }
    if policy is not None:
        problems = check_policy_against(requirements, policy, specs)
        section["policy"] = {
            "source": policy.source,
            "sha256": policy.sha256,
            "meets_requirements": not problems,
            "shortfalls": problems,
        }
    return section
