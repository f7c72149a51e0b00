"""The evaluation's checks beyond calibration, corruption and explanations: fairness,
privacy, autonomy & control (selective prediction) and adversarial robustness.

:func:`run_principle_checks` runs them on the test split with the deployed model; each
result keeps its own typed object for the trust report, and :meth:`PrincipleResults.metrics`
flattens the numbers a gate policy may name (:func:`principle_metric_names`). A check that
cannot apply to this run (no group column, certification switched off) reports NaN, and
:meth:`PrincipleResults.not_applicable` says why, so its gates are skipped, not failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tai.adversarial import ATTACKS, AdversarialResult, adversarial_accuracy, epsilon_key
from tai.fairness import (
    ClassFairness,
    ClusterFairness,
    GroupFairness,
    class_fairness,
    cluster_fairness,
    group_fairness,
)
from tai.privacy import MembershipInference, membership_inference, per_sample_loss
from tai.selective import RiskCoverage, SelectiveMetrics, risk_coverage, selective_metrics
from tai.smoothing import DEFAULT_RADII, CertificationResult, certified_accuracy, radius_key

GROUP_METRICS = (
    "worst_group_accuracy",
    "worst_group_accuracy_lower",
    "worst_group_accuracy_upper",
    "group_error_rate_gap",
    "group_error_rate_gap_lower",
    "group_error_rate_gap_upper",
)
CERTIFICATION_METRICS = (
    *(f"certified_accuracy_{radius_key(r)}" for r in DEFAULT_RADII),
    "smoothing_abstention_rate",
    "average_certified_radius",
)
SELECTIVE_REPORT_COVERAGE = 0.8
THRESHOLD_METRICS = ("abstention_threshold", "coverage_at_threshold", "selective_risk_at_threshold")


@dataclass(frozen=True)
class CheckOptions:
    """Budgets and switches of the checks (the pipeline fills them from the settings).

    Attributes:
        epsilons: L-infinity radii of FGSM and PGD; empty switches both off.
        pgd_steps: PGD iterations.
        adversarial_budget: test images attacked (a seeded subset).
        certify: run randomized-smoothing certification (costly: ``n0 + n`` forward
            passes per image).
        certify_sigma: noise level of the smoothed classifier.
        certify_n0: noisy samples that select the class.
        certify_n: noisy samples that bound its probability.
        certify_budget: test images certified.
        membership_budget: training images (members) and test images (non-members) in
            the membership-inference attack.
        clusters_per_class: k-means pseudo-groups per class when no group column exists.
        confidence: level of the fairness intervals (the policy's).
        n_resamples: bootstrap resamples of the fairness intervals.
    """

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
    confidence: float = 0.95
    n_resamples: int = 1000


def principle_metric_names(epsilons: Sequence[float] = CheckOptions.epsilons) -> list[str]:
    """Every metric of :meth:`PrincipleResults.metrics` for these radii."""
    names = [
        "worst_class_accuracy",
        "worst_class_accuracy_lower",
        "worst_class_accuracy_upper",
        "class_accuracy_gap",
        "class_accuracy_gap_lower",
        "class_accuracy_gap_upper",
        *GROUP_METRICS,
        "worst_cluster_accuracy",
        "worst_cluster_size",
        "cluster_accuracy_gap",
        "mia_auc",
        "mia_advantage",
        "mia_yeom_advantage",
        "mia_tpr_at_1pct_fpr",
        "aurc",
        "e_aurc",
        "risk_at_coverage",
        "abstention_threshold",
        "coverage_at_threshold",
        "selective_risk_at_threshold",
        *CERTIFICATION_METRICS,
    ]
    if epsilons:
        for attack in ATTACKS:
            names += [f"{attack}_clean_accuracy", f"{attack}_mean_accuracy"]
            names += [f"{attack}_accuracy_{epsilon_key(e)}" for e in epsilons]
    return names


@dataclass(frozen=True)
class PrincipleResults:
    """What the checks measured, one typed result per check."""

    fairness: ClassFairness
    clusters: ClusterFairness
    privacy: MembershipInference
    risk_coverage: RiskCoverage
    at_threshold: SelectiveMetrics | None
    adversarial: list[AdversarialResult] = field(default_factory=list)
    groups: GroupFairness | None = None
    certification: CertificationResult | None = None

    def metrics(self) -> dict[str, float]:
        """Flat numbers for gates and MLflow; NaN for checks that did not apply."""
        nan = float("nan")
        privacy = self.privacy.as_dict()
        out = {
            **self.fairness.as_dict(),
            **(self.groups.as_dict() if self.groups else dict.fromkeys(GROUP_METRICS, nan)),
            **self.clusters.as_dict(),
            **{k: v for k, v in privacy.items() if not k.startswith("mia_n_")},
            **self.risk_coverage.as_dict(),
            "risk_at_coverage": self.risk_coverage.risk_at_coverage(SELECTIVE_REPORT_COVERAGE),
            **(
                self.at_threshold.as_dict()
                if self.at_threshold
                else dict.fromkeys(THRESHOLD_METRICS, nan)
            ),
            **(
                self.certification.as_dict()
                if self.certification
                else dict.fromkeys(CERTIFICATION_METRICS, nan)
            ),
        }
        for result in self.adversarial:
            out.update(result.as_dict())
        return {k: float(v) for k, v in out.items()}

    def not_applicable(self) -> dict[str, str]:
        """Gates that cannot apply to this run, with the reason."""
        skip = {}
        if self.groups is None:
            skip.update(dict.fromkeys(GROUP_METRICS, "no group column (TAI_GROUP_COLUMN)"))
        if self.certification is None:
            skip.update(dict.fromkeys(CERTIFICATION_METRICS, "certification off (TAI_CERTIFY)"))
        if self.at_threshold is None:
            skip.update(dict.fromkeys(THRESHOLD_METRICS, "no abstention threshold was fitted"))
        return skip

    def report(self) -> dict:
        """JSON-ready sections of the TAI report."""
        curve = self.risk_coverage
        step = max(len(curve.coverage) // 50, 1)
        return {
            "fairness": {
                "confidence": self.fairness.confidence,
                "per_class": self.fairness.per_class(),
                "worst_class": self.fairness.worst_class,
                "groups": (
                    {"column": self.groups.column, **self.groups.per_group()}
                    if self.groups
                    else None
                ),
                "clusters": self.clusters.per_cluster(),
            },
            "privacy": self.privacy.as_dict(),
            "autonomy": {
                # The curve thinned to about 50 points, for the report's figure.
                "coverage": list(curve.coverage[::step]),
                "risk": list(curve.risk[::step]),
                "report_coverage": SELECTIVE_REPORT_COVERAGE,
                "at_threshold": self.at_threshold.as_dict() if self.at_threshold else None,
            },
            "adversarial": [
                {
                    "attack": r.attack,
                    "epsilons": list(r.epsilons),
                    "accuracy": list(r.accuracy),
                    "clean_accuracy": r.clean_accuracy,
                    "steps": r.steps,
                    "random_start": r.random_start,
                }
                for r in self.adversarial
            ],
            "certification": (
                {
                    "sigma": self.certification.sigma,
                    "n0": self.certification.n0,
                    "n": self.certification.n,
                    "alpha": self.certification.alpha,
                    "radii": list(self.certification.radii),
                    "certified_accuracy": list(self.certification.certified_accuracy),
                    "abstention_rate": self.certification.abstention_rate,
                }
                if self.certification
                else None
            ),
        }


def run_principle_checks(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    probs: Tensor,
    embeddings: Tensor,
    *,
    classes: Sequence[str],
    members: tuple[Tensor, Tensor],
    groups: Sequence[str] | None = None,
    group_column: str = "",
    expected_groups: Sequence[str] | None = None,
    abstention_threshold: float | None = None,
    options: CheckOptions | None = None,
    seed: int = 0,
) -> PrincipleResults:
    """Fairness, privacy, selective prediction and adversarial robustness on the test split.

    Args:
        model: the deployed classifier (temperature-scaled), images in [0, 1].
        images: ``(N, C, H, W)`` test images.
        targets: ``(N,)`` test class indices.
        probs: ``(N, K)`` the model's test probabilities.
        embeddings: ``(N, D)`` penultimate-layer embeddings of the test images.
        classes: class names.
        members: training images and targets: the membership-inference members.
        groups: the group of each test image (from ``metadata.csv``), or None.
        group_column: the column ``groups`` came from.
        expected_groups: every group of the column (all splits); one without test
            samples is an error, since its accuracy cannot be measured.
        abstention_threshold: the confidence threshold fitted on validation, or None.
        options: budgets and switches.
        seed: seeds every subset, bootstrap and attack.

    Raises:
        ValueError: a group has no test samples, lengths disagree, or an input is
            malformed (each message names the value).
    """
    options = options or CheckOptions()
    preds = probs.argmax(1)
    generator = torch.Generator().manual_seed(seed)
    fairness = class_fairness(
        probs,
        targets,
        classes=list(classes),
        n_resamples=options.n_resamples,
        confidence=options.confidence,
        seed=seed,
    )
    by_group = None
    if groups is not None:
        by_group = group_fairness(
            preds,
            targets,
            groups,
            column=group_column,
            expected_groups=expected_groups,
            n_resamples=options.n_resamples,
            confidence=options.confidence,
            seed=seed,
        )
    clusters = cluster_fairness(
        embeddings, preds, targets, clusters_per_class=options.clusters_per_class, seed=seed
    )
    member_images, member_targets = members
    keep = _subset(len(member_targets), options.membership_budget, generator)
    outsiders = _subset(len(targets), options.membership_budget, generator)
    privacy = membership_inference(
        per_sample_loss(model, member_images[keep], member_targets[keep]),
        per_sample_loss(model, images[outsiders], targets[outsiders]),
        seed=seed,
    )
    at_threshold = (
        selective_metrics(probs, targets, abstention_threshold)
        if abstention_threshold is not None
        else None
    )
    attacked = _subset(len(targets), options.adversarial_budget, generator)
    adversarial = [
        adversarial_accuracy(
            model,
            images[attacked],
            targets[attacked],
            epsilons=tuple(options.epsilons),
            attack=attack,
            steps=options.pgd_steps,
            seed=seed,
        )
        for attack in (ATTACKS if options.epsilons else ())
    ]
    certification = None
    if options.certify:
        chosen = _subset(len(targets), options.certify_budget, generator)
        certification = certified_accuracy(
            model,
            images[chosen],
            targets[chosen],
            sigma=options.certify_sigma,
            n0=options.certify_n0,
            n=options.certify_n,
            seed=seed,
        )
    return PrincipleResults(
        fairness=fairness,
        clusters=clusters,
        privacy=privacy,
        risk_coverage=risk_coverage(probs, targets),
        at_threshold=at_threshold,
        adversarial=adversarial,
        groups=by_group,
        certification=certification,
    )


def _subset(n: int, budget: int, generator: torch.Generator) -> Tensor:
    """A seeded random subset of ``range(n)`` of at most ``budget`` indices, in order."""
    if n <= budget:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:budget].sort().values
