"""The registry of checks: the one source of metric names, directions and units.

:func:`evaluation_checks` builds the checks the evaluation runs, from the budgets and
switches in :class:`CheckOptions`; :func:`all_checks` adds the declarations of the data
and monitoring stages; :func:`metric_specs` flattens every declared metric by name. The
gate policy takes its valid names and each metric's direction from here, the reports
their descriptions, and a test holds the EU AI Act map, the default policy, the README's
metric table and the report template to it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from tai.check import Check, DeclaredCheck, MetricSpec, Principle, Stage
from tai.data.checks import DATA_CHECKS
from tai.monitoring.checks import MONITORING_CHECKS
from tai.principles.autonomy.checks import SelectivePredictionCheck
from tai.principles.fairness.checks import (
    ClassFairnessCheck,
    ClusterFairnessCheck,
    GroupFairnessCheck,
)
from tai.principles.privacy.checks import MembershipInferenceCheck
from tai.principles.reliability.checks import CalibrationCheck, CorruptionCheck
from tai.principles.reliability.corruptions import DEFAULT_CORRUPTIONS, SEVERITIES
from tai.principles.security.checks import AdversarialCheck, CertificationCheck
from tai.principles.transparency.checks import ExplanationCheck


@dataclass(frozen=True)
class CheckOptions:
    """Budgets and switches of the evaluation's checks (the pipeline fills them from the
    settings and the policy).

    Attributes:
        corruptions: corruptions of the robustness check.
        corruption_budget: test images corrupted.
        prototypes_per_class: prototypes explained per class.
        ig_steps: Integrated Gradients steps.
        explanation_budget: test images the explanation-quality metrics are computed on.
        explanation_reexplain_budget: of those, the images max-sensitivity and the
            randomisation check explain again (see ``ExplanationCheck``).
        epsilons: L-infinity radii of FGSM and PGD; empty switches both off.
        pgd_steps: PGD iterations.
        adversarial_budget: test images attacked.
        certify: run randomized-smoothing certification (``n0 + n`` passes per image).
        certify_sigma, certify_n0, certify_n, certify_budget: its noise level, samples and
            images.
        membership_budget: members and non-members of the membership-inference attack.
        clusters_per_class: k-means pseudo-groups per class.
    """

    corruptions: Sequence[str] = DEFAULT_CORRUPTIONS
    severities: Sequence[int] = SEVERITIES
    corruption_budget: int = 1000
    prototypes_per_class: int = 1
    ig_steps: int = 32
    explanation_budget: int = 256
    explanation_reexplain_budget: int = 64
    epsilons: Sequence[float] = (0.05, 0.1)
    pgd_steps: int = 10
    adversarial_budget: int = 256
    certify: bool = False
    certify_sigma: float = 0.25
    certify_n0: int = 100
    certify_n: int = 1000
    certify_budget: int = 64
    membership_budget: int = 1000
    clusters_per_class: int = 3
    batch_size: int = 256
    extra: tuple[Check, ...] = field(default=())


def evaluation_checks(options: CheckOptions | None = None) -> tuple[Check, ...]:
    """The checks the evaluation runs, in report order."""
    o = options or CheckOptions()
    checks: list[Check] = [
        CalibrationCheck(),
        CorruptionCheck(
            o.corruptions, o.severities, budget=o.corruption_budget, batch_size=o.batch_size
        ),
        ExplanationCheck(
            prototypes_per_class=o.prototypes_per_class,
            ig_steps=o.ig_steps,
            quality_budget=o.explanation_budget,
            reexplain_budget=o.explanation_reexplain_budget,
            batch_size=o.batch_size,
        ),
        ClassFairnessCheck(),
        GroupFairnessCheck(),
        ClusterFairnessCheck(o.clusters_per_class),
        MembershipInferenceCheck(o.membership_budget, batch_size=o.batch_size),
        SelectivePredictionCheck(),
    ]
    if o.epsilons:
        checks.append(
            AdversarialCheck(
                o.epsilons, steps=o.pgd_steps, budget=o.adversarial_budget, batch_size=o.batch_size
            )
        )
    checks.append(
        CertificationCheck(
            enabled=o.certify,
            sigma=o.certify_sigma,
            n0=o.certify_n0,
            n=o.certify_n,
            budget=o.certify_budget,
            batch_size=o.batch_size,
        )
    )
    return (*checks, *o.extra)


def all_checks(options: CheckOptions | None = None) -> tuple[Check | DeclaredCheck, ...]:
    """Every check of every stage: data, evaluation, monitoring."""
    return (*DATA_CHECKS, *evaluation_checks(options), *MONITORING_CHECKS)


def metric_specs(
    options: CheckOptions | None = None, *, stages: Collection[Stage] | None = None
) -> dict[str, MetricSpec]:
    """Every declared metric by name (of the checks of ``stages`` only, when given).

    Raises:
        RuntimeError: two checks declare the same name (a programming error).
    """
    specs: dict[str, MetricSpec] = {}
    owner: dict[str, str] = {}
    for check in all_checks(options):
        if stages is not None and check.stage not in stages:
            continue
        for spec in check.metric_specs():
            if spec.name in specs:
                raise RuntimeError(
                    f"metric {spec.name!r} is declared by both {owner[spec.name]!r} and "
                    f"{check.name!r}; give one of them another name"
                )
            specs[spec.name] = spec
            owner[spec.name] = check.name
    return specs


GATED_STAGES = (Stage.DATA, Stage.MODEL, Stage.EVALUATION)  # what a model version is gated on


def principle_of(options: CheckOptions | None = None) -> dict[str, Principle]:
    """The principle of each metric (from the check that declares it)."""
    return {m.name: c.principle for c in all_checks(options) for m in c.metric_specs()}
