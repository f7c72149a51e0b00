"""Where the evidence for each EU AI Act requirement is: a map for the trust report.

The EU AI Act (Regulation (EU) 2024/1689) asks providers of high-risk AI systems for
technical documentation (Annex IV) and sets requirements on data governance (Art. 10),
transparency towards deployers (Art. 13), human oversight (Art. 14) and accuracy,
robustness and cybersecurity (Art. 15). Each row below names a requirement and points at
the metrics of the TAI report (``metric:<name>``), the model-version tags
(``tag:<key>``) or the artifacts (``artifact:<path>``) that support it.

This is an engineering aid that says where the evidence is, not a legal assessment: which
level of each metric is "appropriate" (Art. 15(1)) is the provider's decision, written
into the gate policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tai import tags


@dataclass(frozen=True)
class Requirement:
    """One row of the map.

    Attributes:
        reference: the article or annex point, e.g. ``"Art. 10(2)(f)"``.
        requirement: what it asks, in a few words.
        principle: the TAI principle whose checks supply the evidence.
        evidence: ``metric:<name>``, ``tag:<key>`` or ``artifact:<path>`` entries.
    """

    reference: str
    requirement: str
    principle: str
    evidence: tuple[str, ...]


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement(
        "Art. 3(12), Art. 9(2)(a), Annex IV 1(a)",
        "intended purpose and foreseeable risks (risk management)",
        "transparency",
        (f"tag:{tags.REQUIREMENTS_SHA256}", "artifact:requirements/tai-requirements.yaml"),
    ),
    Requirement(
        "Art. 10(2)(f), 10(2)(g)",
        "examine the data for possible biases; measures to detect and mitigate them",
        "fairness",
        (
            "metric:data_min_class_share",
            "metric:worst_class_accuracy",
            "artifact:data/data_card.json",
        ),
    ),
    Requirement(
        "Art. 10(3)",
        "training, validation and test data relevant, representative, free of errors",
        "reliability",
        (
            "metric:data_label_issue_rate",
            "metric:data_duplicate_groups",
            "metric:data_split_leakage",
            "metric:data_val_leakage",
            "metric:data_noise_sigma_median",
            "metric:data_noise_sigma_shift",
            "metric:data_drifted_factors",
        ),
    ),
    Requirement(
        "Art. 10(2)(b), Annex IV 2(d)",
        "data provenance and preparation (datasheet)",
        "transparency",
        (f"tag:{tags.DATA_COMMIT}", f"tag:{tags.DATA_REPOSITORY}", "artifact:data/data_card.json"),
    ),
    Requirement(
        "Art. 13(3)(b)(ii), Art. 15(3)",
        "declared levels of accuracy and the metrics used",
        "reliability",
        ("metric:accuracy", "metric:ece", "metric:ece_upper", "artifact:tai/tai_report.json"),
    ),
    Requirement(
        "Art. 13(3)(b)(v), Annex IV 3",
        "performance for specific persons or groups",
        "fairness",
        (
            "metric:worst_class_accuracy",
            "metric:class_accuracy_gap",
            "metric:worst_cluster_accuracy",
        ),
    ),
    Requirement(
        "Art. 13(3)(b)(vii), Art. 14(4)(c)",
        "help deployers interpret the output",
        "transparency",
        (
            "metric:deletion_auc",
            "metric:insertion_auc",
            "metric:nearest_prototype_accuracy",
            "artifact:trust report",
        ),
    ),
    Requirement(
        "Art. 14(4)(a), 14(4)(d)",
        "know the limits; decide not to use or to override the output",
        "autonomy & control",
        ("metric:aurc", "metric:abstention_threshold", "metric:coverage_at_threshold"),
    ),
    Requirement(
        "Art. 14(4)(e), Annex IV 2(e)",
        "a person can intervene; human oversight measures",
        "autonomy & control",
        (f"tag:{tags.APPROVAL}", f"tag:{tags.GATES_PASSED}"),
    ),
    Requirement(
        "Art. 15(4)",
        "resilient to errors, faults and inconsistencies of the input",
        "reliability",
        ("metric:mean_corruption_accuracy", "metric:corruption_mce"),
    ),
    Requirement(
        "Art. 15(5)",
        "resilient to adversarial examples and model evasion",
        "security",
        ("metric:pgd_mean_accuracy", "metric:fgsm_mean_accuracy"),
    ),
    Requirement(
        "Art. 15(5)",
        "resilient to confidentiality attacks",
        "privacy",
        ("metric:mia_advantage", "metric:mia_auc", "metric:mia_tpr_at_1pct_fpr"),
    ),
    Requirement(
        "Art. 15(5)",
        "resilient to model poisoning (tampered weights)",
        "security",
        (f"tag:{tags.WEIGHTS_SHA256}", f"tag:{tags.MODEL_SHA256}"),
    ),
    Requirement(
        "Annex IV 2(g)",
        "validation and testing procedures, metrics, dated test logs",
        "reliability",
        ("artifact:tai/tai_report.json", f"tag:{tags.GATES_PASSED}", f"tag:{tags.POLICY_SHA256}"),
    ),
    Requirement(
        "Annex IV 6",
        "relevant changes through the lifecycle",
        "transparency",
        (
            f"tag:{tags.CODE_VERSION}",
            "metric:attribution_stability_spearman",
            "metric:data_drifted_factors",
        ),
    ),
)


@dataclass(frozen=True)
class EvidenceRow:
    """A requirement with the state of each of its evidence entries."""

    requirement: Requirement
    found: dict[str, str]  # evidence entry -> what the report holds ("0.9812", "missing", ...)

    @property
    def supported(self) -> bool:
        return any(v != "missing" for v in self.found.values())


def evidence_table(
    metrics: Mapping[str, float], tags: Mapping[str, str], artifacts: set[str]
) -> list[EvidenceRow]:
    """Resolve every requirement's evidence against one model version's report.

    A metric that is NaN (not applicable, e.g. no champion to compare with) counts as
    ``"n/a"``; an absent one, tag or artifact as ``"missing"``.
    """
    rows = []
    for req in REQUIREMENTS:
        found = {}
        for entry in req.evidence:
            kind, _, name = entry.partition(":")
            if kind == "metric":
                value = metrics.get(name)
                if value is None:
                    found[entry] = "missing"
                else:
                    found[entry] = "n/a" if math.isnan(value) else f"{value:.4g}"
            elif kind == "tag":
                found[entry] = tags[name][:16] if tags.get(name) else "missing"
            else:
                found[entry] = "present" if name in artifacts else "missing"
        rows.append(EvidenceRow(req, found))
    return rows
