"""Declarations of the monitoring stage's checks: what :func:`tai.monitoring.assess.
assess_batch` reports for a production batch, for the registry
(:mod:`tai.evaluation.registry`).

The numbers come from :meth:`tai.monitoring.assess.BatchAssessment.metrics`; a test holds
them to these declarations. p-values are declared higher-is-better (a high p-value is no
evidence of a change), so a gate reads ``min: 0.01``; the counts and the expected rate
are what they are.
"""

from __future__ import annotations

from tai.check import DeclaredCheck, Principle, Stage, metric

MONITORING_ACCURACY = DeclaredCheck(
    "monitoring_accuracy",
    Principle.RELIABILITY,
    Stage.MONITORING,
    "Accuracy of a production batch without labels",
    (
        metric("n_images", None, "images in the production batch", "count"),
        metric(
            "estimated_accuracy",
            True,
            "label-free accuracy estimate of the batch (ATC, Garg et al. 2022)",
            bounded=True,
        ),
        metric("estimated_accuracy_lower", True, "lower bound of estimated_accuracy's interval"),
        metric("estimated_accuracy_upper", True, "upper bound of estimated_accuracy's interval"),
        metric("average_confidence", True, "mean top probability of the batch (AC estimate)"),
        metric(
            "doc_estimated_accuracy",
            True,
            "validation accuracy minus the drop of mean confidence (DoC estimate)",
        ),
    ),
)
MONITORING_DEFERRAL = DeclaredCheck(
    "monitoring_deferral",
    Principle.AUTONOMY,
    Stage.MONITORING,
    "Deferral to a human on a production batch",
    (
        metric(
            "deferral_rate",
            False,
            "share of the batch below the abstention threshold",
            bounded=True,
        ),
        metric("expected_deferral_rate", None, "share of validation below the threshold"),
        metric(
            "deferral_p_value",
            True,
            "Fisher's exact test of the deferral count against validation's",
            "",
        ),
    ),
)
MONITORING_DRIFT = DeclaredCheck(
    "monitoring_drift",
    Principle.RELIABILITY,
    Stage.MONITORING,
    "Drift of a production batch",
    (
        metric(
            "drift_p_value",
            True,
            "MMD permutation test of the embeddings against training's",
            "",
        ),
        metric(
            "batch_noise_sigma_shift",
            False,
            "absolute shift of the median noise level from training's",
            "",
        ),
    ),
)
MONITORING_FACTORS = DeclaredCheck(
    "monitoring_factors",
    Principle.TRANSPARENCY,
    Stage.MONITORING,
    "Factors of variation that moved in a production batch",
    (
        metric(
            "drifted_factors",
            False,
            "embedding principal components that drifted (KS, Holm)",
            "count",
        ),
    ),
)
MONITORING_CLASSES = DeclaredCheck(
    "monitoring_classes",
    Principle.FAIRNESS,
    Stage.MONITORING,
    "Classes of a production batch",
    (
        metric(
            "worst_class_estimated_accuracy",
            True,
            "lowest label-free accuracy estimate among predicted classes (ATC)",
        ),
        metric(
            "prior_shift_tv",
            False,
            "total variation between estimated (EM) and training class priors",
        ),
    ),
)
MONITORING_CHECKS = (
    MONITORING_ACCURACY,
    MONITORING_DEFERRAL,
    MONITORING_DRIFT,
    MONITORING_FACTORS,
    MONITORING_CLASSES,
)
# Every metric of BatchAssessment.metrics(), in declaration order.
MONITORING_METRICS: tuple[str, ...] = tuple(
    name for check in MONITORING_CHECKS for name in check.metric_names
)
