r"""One unlabelled production batch against the model version's reference.

:func:`assess_batch` takes the deployed model's temperature-scaled probabilities and
penultimate-layer embeddings of a batch and its :class:`~tai.monitoring.reference.
MonitoringReference`, and estimates, without labels:

- accuracy (:mod:`tai.monitoring.atc`): ATC with an interval, and the AC and DoC
  baselines beside it;
- per predicted class (:attr:`BatchAssessment.per_class`): ATC among the batch images
  predicted as the class, with the class's own threshold (fitted on the validation
  images predicted as it, so that in distribution the estimate is unbiased for the
  class's *precision*, whose score-to-correctness relation can differ from the global
  one); a class predicted fewer than ``min_class_support`` times on validation uses the
  global threshold. The worst class is taken over the classes predicted at least
  :data:`MIN_CLASS_IMAGES` times in the batch (a minimum of noisy estimates is biased
  low; fewer images make it noise). This is per *predicted* class: the evaluation's
  ``worst_class_accuracy`` is per *true* class (recall), which needs labels;
- class priors (:mod:`tai.monitoring.priors`): EM (the primary estimate, needs
  calibrated probabilities) and BBSE; the total variation of the EM estimate from the
  training priors, and the class whose share grew most;
- deferral (:mod:`tai.monitoring.deferral`): the share below the abstention threshold,
  tested against the validation's count (Fisher's exact test);
- drift (:mod:`tai.monitoring.drift`): the MMD permutation test of the embeddings, the
  KS test of each factor (Holm-corrected), and the noise level when the caller passes
  the images' noise sigmas.

The permutation test's p-value is at least :math:`1 / (1 + B)` for ``B`` relabellings,
so a rule "alarm when ``drift_p_value`` < p" can only fire when that is below p.
:data:`DEFAULT_N_PERMUTATIONS` (2,000: smallest p-value 0.0005) reaches the minimum
policy threshold of 0.001; pass the policy's threshold as ``drift_p_min`` and the count
is derived from it (:func:`tai.monitoring.drift.permutations_for`, :math:`\lceil 2/p
\rceil`, at most :data:`MAX_N_PERMUTATIONS`), or an explicit count that cannot reach
it is refused. The test stops at :data:`MMD_STOP_AFTER` relabellings as extreme as the
batch (raised to ``B * drift_p_min`` when that is more), with the sequential p-value of
:mod:`tai.monitoring.drift`: a batch like the reference costs a few dozen relabellings,
and every alarm is the one the full test would have raised.

What the accuracy estimate can and cannot do. ATC is unbiased when the batch is drawn like
the validation split and under a pure prior shift it stays close (measured in the tests);
under a covariate shift it has a bias of its own that no interval built from the batch
can show (the paper's Table 1 reports errors of a few points on real shifts). The
interval (:func:`tai.monitoring.atc.atc_interval`) therefore covers the batch's accuracy
at about its level when nothing changed or only the priors did, and less under shifts
that move the model's confidence; read it together with the drift tests: a batch that
drifted makes every label-free estimate less reliable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tai.check import derive_seed
from tai.inputs import check_confidence
from tai.monitoring.arrays import (
    as_embeddings,
    as_probs,
    as_sigmas,
    check_count,
    check_fraction,
    check_seed,
)
from tai.monitoring.atc import (
    AtcInterval,
    atc_accuracy,
    atc_interval,
    atc_scores,
    average_confidence,
    doc_accuracy,
)
from tai.monitoring.checks import MONITORING_METRICS
from tai.monitoring.deferral import DeferralTest, deferral_test
from tai.monitoring.drift import (
    FactorShift,
    MmdTest,
    NoiseShift,
    factor_drift,
    mmd_test,
    noise_shift,
    permutations_for,
)
from tai.monitoring.priors import PriorEstimate, bbse_priors, em_priors, total_variation
from tai.monitoring.reference import MonitoringReference

__all__ = [
    "DEFAULT_N_PERMUTATIONS",
    "MAX_N_PERMUTATIONS",
    "MIN_CLASS_IMAGES",
    "BatchAssessment",
    "ClassEstimate",
    "assess_batch",
    "drift_permutations",
    "drift_rule_minimum",
]

# Batch images a class must be predicted for to enter the worst class.
MIN_CLASS_IMAGES = 10
DEFAULT_N_RESAMPLES = 1000
# Relabellings of the MMD test: its smallest p-value, 1 / 2001, is below half of the
# lowest drift threshold a policy is expected to use (0.001).
DEFAULT_N_PERMUTATIONS = 2000
# Most relabellings derived from a policy threshold (p >= 1e-4; about 4 s per batch of
# 500 against 1,000 reference points on 2 cores).
MAX_N_PERMUTATIONS = 20_000
DEFAULT_MAX_SAMPLES = 1000
# The MMD test stops at this many relabellings as extreme as the batch (the sequential
# p-value of tai.monitoring.drift): a batch like the reference costs about 20 / p
# relabellings instead of all of them (20 benign batches of the detector self-test's
# shape: 2.34 -> 0.84 s, benchmarks/mmd_sequential.py, 2026-12-04).
MMD_STOP_AFTER = 20
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class ClassEstimate:
    """One class in the batch.

    Attributes:
        name: the class's name.
        n_predicted: batch images predicted as the class.
        estimated_accuracy: ATC's estimate among them (share of their scores above the
            class threshold): the class's precision; NaN when none is predicted.
        threshold: the ATC threshold used (the class's own, or the global one).
        own_threshold: the class had enough validation predictions for its own.
        validation_precision: share right among the validation images predicted as it.
        estimated_prior: its share of the batch by EM.
        bbse_prior: its share by BBSE.
        training_prior: its share of the training split.
    """

    name: str
    n_predicted: int
    estimated_accuracy: float
    threshold: float
    own_threshold: bool
    validation_precision: float
    estimated_prior: float
    bbse_prior: float
    training_prior: float


@dataclass(frozen=True)
class BatchAssessment:
    """Everything :func:`assess_batch` estimated about one batch.

    Attributes:
        n_images: images in the batch.
        accuracy: ATC's estimate and interval.
        average_confidence: AC, the mean top probability.
        doc_accuracy: DoC's estimate.
        score_kind: ATC's score.
        deferral: the deferral test, or None when the model has no abstention threshold.
        drift: the MMD test of the embeddings.
        factors: one KS test per factor, in factor order.
        alpha: family-wise level of ``drifted`` factors.
        per_class: one :class:`ClassEstimate` per class, in class order.
        priors_em: EM's estimate of the batch's priors.
        priors_bbse: BBSE's.
        training_priors: the training split's.
        grown_class: the class whose EM share grew most over its training share.
        grown_by: by how much (a share; may be <= 0 only if nothing grew).
        noise: the noise-level comparison, or None when no sigmas were given or stored.
        skipped: metric -> why it is NaN.
    """

    n_images: int
    accuracy: AtcInterval
    average_confidence: float
    doc_accuracy: float
    score_kind: str
    deferral: DeferralTest | None
    drift: MmdTest
    factors: tuple[FactorShift, ...]
    alpha: float
    per_class: tuple[ClassEstimate, ...]
    priors_em: PriorEstimate
    priors_bbse: PriorEstimate
    training_priors: np.ndarray
    grown_class: str
    grown_by: float
    noise: NoiseShift | None
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def drifted_factors(self) -> tuple[int, ...]:
        """Indices of the factors that drifted (Holm-adjusted p below ``alpha``)."""
        return tuple(f.factor for f in self.factors if f.drifted)

    @property
    def most_shifted_factors(self) -> tuple[int, ...]:
        """Factor indices by decreasing KS statistic (the factors that moved most)."""
        return tuple(f.factor for f in sorted(self.factors, key=lambda f: -f.ks_statistic))

    @property
    def worst_class(self) -> ClassEstimate | None:
        """The class of lowest estimated accuracy among those predicted at least
        :data:`MIN_CLASS_IMAGES` times, or None."""
        eligible = [c for c in self.per_class if c.n_predicted >= MIN_CLASS_IMAGES]
        return min(eligible, key=lambda c: c.estimated_accuracy) if eligible else None

    @property
    def prior_shift_tv(self) -> float:
        """Total variation between the EM priors and the training priors."""
        return total_variation(self.priors_em.priors, self.training_priors)

    def metrics(self) -> dict[str, float]:
        """The numbers declared in :data:`tai.monitoring.checks.MONITORING_CHECKS`, in
        their order; NaN where :meth:`not_applicable` says why."""
        worst = self.worst_class
        d = self.deferral
        values = {
            "n_images": float(self.n_images),
            "estimated_accuracy": self.accuracy.estimate,
            "estimated_accuracy_lower": self.accuracy.lower,
            "estimated_accuracy_upper": self.accuracy.upper,
            "average_confidence": self.average_confidence,
            "doc_estimated_accuracy": self.doc_accuracy,
            "deferral_rate": d.rate if d else math.nan,
            "expected_deferral_rate": d.expected_rate if d else math.nan,
            "deferral_p_value": d.p_value if d else math.nan,
            "drift_p_value": self.drift.p_value,
            "drifted_factors": float(len(self.drifted_factors)),
            "worst_class_estimated_accuracy": worst.estimated_accuracy if worst else math.nan,
            "prior_shift_tv": self.prior_shift_tv,
            "batch_noise_sigma_shift": abs(self.noise.shift) if self.noise else math.nan,
        }
        return {name: float(values[name]) for name in MONITORING_METRICS}

    def bounds(self) -> dict[str, tuple[float, float]]:
        """Confidence intervals at the assessment's level: ``estimated_accuracy`` (ATC's)
        and ``deferral_rate`` (Clopper-Pearson) when the model defers."""
        out = {"estimated_accuracy": (self.accuracy.lower, self.accuracy.upper)}
        if self.deferral:
            out["deferral_rate"] = (self.deferral.lower, self.deferral.upper)
        return out

    def not_applicable(self) -> dict[str, str]:
        """Metric -> why it is NaN (its gates are to be skipped)."""
        return dict(self.skipped)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN and infinities as None), for the report."""
        a = self.accuracy
        worst = self.worst_class
        out = {
            "metrics": self.metrics(),
            "bounds": {k: list(v) for k, v in self.bounds().items()},
            "not_applicable": self.not_applicable(),
            "accuracy": {
                "score": self.score_kind,
                "atc": a.estimate,
                "lower": a.lower,
                "upper": a.upper,
                "confidence": a.confidence,
                "n_resamples": a.n_resamples,
                "average_confidence": self.average_confidence,
                "doc": self.doc_accuracy,
            },
            "deferral": None if self.deferral is None else vars(self.deferral),
            "drift": {
                "mmd": vars(self.drift),
                "alpha": self.alpha,
                "correction": "holm",
                "factors": [vars(f) for f in self.factors],
                "drifted_factors": list(self.drifted_factors),
                "most_shifted_factors": list(self.most_shifted_factors),
                "noise": None if self.noise is None else vars(self.noise),
            },
            "classes": {
                "per_class": [vars(c) for c in self.per_class],
                "worst_class": worst.name if worst else None,
                "min_class_images": MIN_CLASS_IMAGES,
                "prior_shift_tv": self.prior_shift_tv,
                "prior_shift_tv_bbse": total_variation(
                    self.priors_bbse.priors, self.training_priors
                ),
                "grown_class": self.grown_class,
                "grown_by": self.grown_by,
                "em_steps": self.priors_em.n_steps,
                "em_converged": self.priors_em.converged,
            },
        }
        return _json_ready(out)


def drift_rule_minimum(rules: Iterable[Any]) -> float | None:
    """The lowest ``min`` threshold of the ``drift_p_value`` rules among ``rules`` (a
    policy's ``monitoring`` gates: objects with ``metric``, ``bound`` and ``threshold``),
    or None without one: what :func:`assess_batch`'s ``drift_p_min`` expects."""
    found = [float(r.threshold) for r in rules if r.metric == "drift_p_value" and r.bound == "min"]
    return min(found) if found else None


def drift_permutations(n_permutations: int | None, drift_p_min: float | None) -> int:
    """The MMD test's relabellings: ``n_permutations``, or when None the default raised
    to what ``drift_p_min`` needs (:func:`~tai.monitoring.drift.permutations_for`).

    Raises:
        ValueError: ``n_permutations`` is not an integer >= 1; ``drift_p_min`` is not in
            (0, 1]; the test with ``n_permutations`` cannot reach a p-value below
            ``drift_p_min``; or it would need more than :data:`MAX_N_PERMUTATIONS`.
    """
    if drift_p_min is None:
        default = DEFAULT_N_PERMUTATIONS if n_permutations is None else n_permutations
        return check_count(default, "n_permutations", 1)
    needed = permutations_for(drift_p_min)
    if n_permutations is None:
        if needed > MAX_N_PERMUTATIONS:
            raise ValueError(
                f"A drift_p_value minimum of {drift_p_min:g} needs {needed} MMD permutations, "
                f"more than {MAX_N_PERMUTATIONS}: use a minimum of at least "
                f"{2 / MAX_N_PERMUTATIONS:g}."
            )
        return max(DEFAULT_N_PERMUTATIONS, needed)
    n = check_count(n_permutations, "n_permutations", 1)
    if 1 / (1 + n) >= drift_p_min:
        raise ValueError(
            f"With n_permutations={n} the MMD p-value is at least 1/{n + 1} = {1 / (n + 1):.3g}, "
            f"never below the drift_p_value minimum of {drift_p_min:g}: use at least {needed}."
        )
    return n


def assess_batch(
    probs: Any,
    embeddings: Any,
    reference: MonitoringReference,
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    n_permutations: int | None = None,
    drift_p_min: float | None = None,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    alpha: float = DEFAULT_ALPHA,
    noise_sigmas: Any = None,
    seed: int = 0,
) -> BatchAssessment:
    """Assess an unlabelled batch against ``reference`` (see the module docstring).

    Args:
        probs: ``(m, K)`` the deployed model's temperature-scaled probabilities,
            ``m >= 2``, ``K`` the reference's class count.
        embeddings: ``(m, D)`` its penultimate-layer embeddings, ``D`` the reference's.
        reference: from :func:`tai.monitoring.reference.fit_reference` for this model
            version.
        confidence: two-sided level of the intervals, in (0, 1).
        n_resamples: replicates of ATC's interval.
        n_permutations: relabellings of the MMD test; None: :data:`DEFAULT_N_PERMUTATIONS`,
            or what ``drift_p_min`` needs when more (:func:`drift_permutations`).
        drift_p_min: the threshold the drift p-value will be compared with (the policy's
            ``drift_p_value`` minimum, :func:`drift_rule_minimum`), or None; an
            ``n_permutations`` whose smallest p-value is not below it is refused.
        max_samples: most batch embeddings in the MMD test (seeded subsample).
        alpha: family-wise level at which a factor counts as drifted.
        noise_sigmas: ``(m',)`` noise levels of the batch's images
            (:func:`tai.data.profile.estimate_noise_sigma`), or None; compared only when
            the reference stores training sigmas too.
        seed: seeds every random choice; each part (interval, MMD) draws from its own
            stream derived from it.

    Raises:
        TypeError: ``reference`` is not a :class:`MonitoringReference`.
        ValueError: fewer than 2 images, ``probs`` not a probability matrix of ``K``
            columns, ``embeddings`` of another dimension or row count, or an invalid
            option (including a permutation count that cannot reach ``drift_p_min``).
    """
    if not isinstance(reference, MonitoringReference):
        raise TypeError(
            f"Expected `reference` to be a MonitoringReference, but got "
            f"{type(reference).__name__}. Fit one with fit_reference or load one with "
            "MonitoringReference.load."
        )
    p = as_probs(probs, n_classes=reference.n_classes)
    if len(p) < 2:
        raise ValueError(
            f"Expected a batch of at least 2 images, but got {len(p)}. Collect more images "
            "before assessing the batch."
        )
    e = as_embeddings(embeddings, dim=reference.dim, n_rows=len(p))
    check_confidence(confidence)
    n_resamples = check_count(n_resamples, "n_resamples", 1)
    n_permutations = drift_permutations(n_permutations, drift_p_min)
    max_samples = check_count(max_samples, "max_samples", 2)
    alpha = check_fraction(alpha, "alpha")
    seed = check_seed(seed)
    sigmas = None if noise_sigmas is None else as_sigmas(noise_sigmas, "noise_sigmas")
    skipped: dict[str, str] = {}

    # Accuracy.
    scores = atc_scores(p, reference.score_kind)
    top = p.max(axis=1)
    preds = p.argmax(axis=1)
    accuracy = atc_interval(
        scores,
        top,
        reference.threshold,
        reference.bootstrap_thresholds,
        confidence=confidence,
        n_resamples=n_resamples,
        rng=np.random.default_rng(derive_seed(seed, "monitoring.accuracy")),
    )
    ac = average_confidence(p)
    doc = doc_accuracy(reference.val_accuracy, reference.val_confidence, ac)

    # Deferral.
    deferral = None
    if reference.has_abstention:
        deferral = deferral_test(
            top,
            reference.abstention_threshold,
            reference.expected_deferral_rate,
            n_reference=reference.n_val,
            confidence=confidence,
        )
    else:
        for name in ("deferral_rate", "expected_deferral_rate", "deferral_p_value"):
            skipped[name] = "the model has no abstention threshold"

    # Drift. A test that stops early has both its sequential p-value and the full test's
    # at or above stop_after / B, here at least drift_p_min: the alarm is the full test's.
    stop_after = MMD_STOP_AFTER
    if drift_p_min is not None:
        stop_after = max(stop_after, math.ceil(n_permutations * drift_p_min))
    drift = mmd_test(
        reference.embeddings.astype(np.float64),
        e,
        n_permutations=n_permutations,
        max_samples=max_samples,
        rng=np.random.default_rng(derive_seed(seed, "monitoring.drift")),
        stop_after=stop_after,
    )
    factors = factor_drift(
        reference.factor_scores.astype(np.float64),
        reference.factors.transform(e),
        reference.factor_explained_variance_ratio,
        alpha=alpha,
    )
    noise = None
    if sigmas is not None and reference.noise_sigmas is not None:
        noise = noise_shift(sigmas, reference.noise_sigmas)
    else:
        skipped["batch_noise_sigma_shift"] = (
            "no noise levels of the batch's images given"
            if sigmas is None
            else "the reference stores no training noise levels"
        )

    # Classes and priors.
    em = em_priors(p, reference.train_priors)
    bbse = bbse_priors(preds, reference.val_confusion)
    per_class = _per_class(scores, preds, reference, em, bbse)
    if not any(c.n_predicted >= MIN_CLASS_IMAGES for c in per_class):
        skipped["worst_class_estimated_accuracy"] = (
            f"no class predicted at least {MIN_CLASS_IMAGES} times in the batch"
        )
    growth = em.priors - reference.train_priors
    grown = int(np.argmax(growth))

    return BatchAssessment(
        n_images=len(p),
        accuracy=accuracy,
        average_confidence=ac,
        doc_accuracy=doc,
        score_kind=reference.score_kind,
        deferral=deferral,
        drift=drift,
        factors=factors,
        alpha=alpha,
        per_class=per_class,
        priors_em=em,
        priors_bbse=bbse,
        training_priors=reference.train_priors,
        grown_class=reference.classes[grown],
        grown_by=float(growth[grown]),
        noise=noise,
        skipped=skipped,
    )


def _per_class(
    scores: np.ndarray,
    preds: np.ndarray,
    reference: MonitoringReference,
    em: PriorEstimate,
    bbse: PriorEstimate,
) -> tuple[ClassEstimate, ...]:
    out = []
    for k, name in enumerate(reference.classes):
        member = preds == k
        n = int(np.count_nonzero(member))
        t = float(reference.class_thresholds[k])
        out.append(
            ClassEstimate(
                name=name,
                n_predicted=n,
                estimated_accuracy=atc_accuracy(scores[member], t) if n else math.nan,
                threshold=t,
                own_threshold=bool(reference.val_class_support[k] >= reference.min_class_support),
                validation_precision=float(reference.val_class_precision[k]),
                estimated_prior=float(em.priors[k]),
                bbse_prior=float(bbse.priors[k]),
                training_prior=float(reference.train_priors[k]),
            )
        )
    return tuple(out)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_ready(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
