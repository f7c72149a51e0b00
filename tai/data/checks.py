"""Declarations of the data stage's checks: what the data card and the drift between
data commits report, for the registry (:mod:`tai.evaluation.registry`).

The numbers come from :func:`tai.data.card.data_metrics` and
:meth:`tai.data.drift.DataDrift.metrics`; a test holds them to these declarations.

``data_split_leakage`` counts test images only: they are what every test metric is
measured on, so a default gate holds it at 0. ``data_val_leakage`` counts validation
images (they bias early stopping, the temperature and the abstention threshold); both
compare with the training split (:mod:`tai.data.leakage`).
"""

from __future__ import annotations

from tai.check import DeclaredCheck, Principle, Stage, metric

DATA_VALIDATION = DeclaredCheck(
    "data_validation",
    Principle.RELIABILITY,
    Stage.DATA,
    "Validation of the data commit",
    (metric("data_duplicate_groups", False, "groups of byte-identical images", "count"),),
)
SPLIT_LEAKAGE = DeclaredCheck(
    "split_leakage",
    Principle.RELIABILITY,
    Stage.DATA,
    "Leakage of training images into the held-out splits",
    (
        metric(
            "data_split_leakage",
            False,
            "test images that also occur in the training split, byte-identical or near-duplicate",
            "count",
        ),
        metric(
            "data_val_leakage",
            False,
            "validation images that also occur in the training split, byte-identical or "
            "near-duplicate",
            "count",
        ),
    ),
)
NOISE_PROFILE = DeclaredCheck(
    "noise_profile",
    Principle.RELIABILITY,
    Stage.DATA,
    "Noise profile",
    (metric("data_noise_sigma_median", False, "median wavelet noise level of the images", ""),),
)
LABEL_NOISE = DeclaredCheck(
    "label_noise",
    Principle.RELIABILITY,
    Stage.DATA,
    "Label noise (confident learning)",
    (metric("data_label_issue_rate", False, "share of training labels flagged as issues"),),
)
REPRESENTATION = DeclaredCheck(
    "representation",
    Principle.FAIRNESS,
    Stage.DATA,
    "Representation of classes and groups",
    (
        metric("data_min_class_balance", True, "smallest class count over the largest, per split"),
        metric("data_min_class_share", True, "smallest share of a class in any split"),
        metric(
            "data_max_class_imbalance_ratio",
            False,
            "largest over smallest training class count",
            "ratio",
        ),
        metric("data_min_group_share", True, "smallest share of a group in any split"),
    ),
)
DATA_DRIFT = DeclaredCheck(
    "data_drift",
    Principle.RELIABILITY,
    Stage.DATA,
    "Drift since the last model's data",
    (
        metric(
            "data_noise_sigma_shift",
            False,
            "shift of the median noise level",
            "",
            needs_baseline=True,
        ),
        metric(
            "data_label_issue_rate_shift",
            False,
            "change of the label-issue rate",
            needs_baseline=True,
        ),
        metric(
            "data_factor_drift_max_ks",
            False,
            "largest KS statistic over the factors of variation",
            needs_baseline=True,
        ),
        metric(
            "data_drifted_factors",
            False,
            "factors of variation that drifted (Bonferroni)",
            "count",
            needs_baseline=True,
        ),
    ),
)
CARD_CHECKS = (DATA_VALIDATION, SPLIT_LEAKAGE, NOISE_PROFILE, LABEL_NOISE, REPRESENTATION)
DATA_CHECKS = (*CARD_CHECKS, DATA_DRIFT)
