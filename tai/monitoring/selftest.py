r"""Does the monitoring's alarm work for this model? False alarms and detections.

:func:`detector_self_test` assesses (:func:`tai.monitoring.assess.assess_batch`)

- ``n_benign`` *benign* batches of ``batch_size`` images drawn (without replacement within
  a batch, seeded) from a labelled held-out split the reference was not fitted on (the
  test split; not the validation split, whose images fitted ATC's threshold): nothing
  changed, so every alarm is a false one. Their labels also give each batch's true
  accuracy, hence ATC's, AC's and DoC's errors and the interval's coverage;
- the *shifted* batches the caller provides (e.g. corrupted copies of held-out images),
  each with its true accuracy when known: an alarm is a detection.

The alarm is the caller's rule, a callable of ``(metrics, bounds)`` (those of
:meth:`~tai.monitoring.assess.BatchAssessment.metrics` and ``bounds()``), e.g. built
from the gate policy. The false-alarm rate gets a Clopper-Pearson interval: with 20
benign batches and no alarm it is below 0.17 at 95%, so a low false-alarm rate needs many
batches to be shown.

Benign batches share the held-out split: when ``n_benign * batch_size`` exceeds its
size they overlap, and their outcomes are not independent; the rate is then still
unbiased but its interval too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest

from tai.check import derive_seed
from tai.monitoring.arrays import as_embeddings, as_probs, as_targets, check_count, check_seed
from tai.monitoring.assess import DEFAULT_N_RESAMPLES, assess_batch, drift_permutations
from tai.monitoring.reference import MonitoringReference

__all__ = ["Alarm", "BatchOutcome", "SelfTestResult", "ShiftedBatch", "detector_self_test"]

Alarm = Callable[[dict[str, float], dict[str, tuple[float, float]]], bool]


@dataclass(frozen=True)
class ShiftedBatch:
    """A batch the alarm should fire on.

    Attributes:
        name: the shift's name (batches of one name are pooled in
            :attr:`SelfTestResult.detection_by_shift`).
        probs: ``(m, K)`` the model's probabilities on it.
        embeddings: ``(m, D)`` its embeddings.
        true_accuracy: its accuracy when labels are known, else NaN.
        noise_sigmas: its images' noise levels, or None.
    """

    name: str
    probs: Any
    embeddings: Any
    true_accuracy: float = math.nan
    noise_sigmas: Any = None


@dataclass(frozen=True)
class BatchOutcome:
    """One assessed batch.

    Attributes:
        name: ``"benign"`` or the shift's name.
        alarmed: the alarm fired.
        true_accuracy: the batch's accuracy (NaN when unknown).
        estimated_accuracy: ATC's estimate.
        lower: its interval's lower bound.
        upper: its upper bound.
        average_confidence: AC's estimate.
        doc_accuracy: DoC's estimate.
        drift_p_value: the MMD test's p-value.
    """

    name: str
    alarmed: bool
    true_accuracy: float
    estimated_accuracy: float
    lower: float
    upper: float
    average_confidence: float
    doc_accuracy: float
    drift_p_value: float

    @property
    def covered(self) -> bool:
        """The interval holds the true accuracy (False when it is unknown)."""
        return self.lower <= self.true_accuracy <= self.upper


@dataclass(frozen=True)
class SelfTestResult:
    """False alarms on benign batches, detections on shifted ones.

    Attributes:
        benign: the outcome of each benign batch.
        shifted: the outcome of each shifted batch, in the order given.
        batch_size: images per benign batch.
        confidence: level of the intervals.
    """

    benign: tuple[BatchOutcome, ...]
    shifted: tuple[BatchOutcome, ...]
    batch_size: int
    confidence: float

    @property
    def false_alarm_rate(self) -> float:
        """Share of benign batches that alarmed."""
        return _share(o.alarmed for o in self.benign)

    @property
    def false_alarm_interval(self) -> tuple[float, float]:
        """Clopper-Pearson interval of :attr:`false_alarm_rate`."""
        k = sum(o.alarmed for o in self.benign)
        ci = binomtest(k, len(self.benign)).proportion_ci(self.confidence, method="exact")
        return float(ci.low), float(ci.high)

    @property
    def detection_rate(self) -> float:
        """Share of shifted batches that alarmed (NaN without any)."""
        return _share(o.alarmed for o in self.shifted)

    @property
    def detection_by_shift(self) -> dict[str, float]:
        """Share alarmed per shift name."""
        names = dict.fromkeys(o.name for o in self.shifted)
        return {n: _share(o.alarmed for o in self.shifted if o.name == n) for n in names}

    @property
    def benign_coverage(self) -> float:
        """Share of benign batches whose accuracy interval held their accuracy."""
        return _share(o.covered for o in self.benign)

    def errors(self, outcomes: Sequence[BatchOutcome] | None = None) -> dict[str, float]:
        """Mean absolute error of ATC, AC and DoC over ``outcomes`` with a known accuracy
        (default: the shifted batches); NaN without any."""
        known = [
            o
            for o in (self.shifted if outcomes is None else outcomes)
            if not math.isnan(o.true_accuracy)
        ]

        def mae(attr: str) -> float:
            if not known:
                return math.nan
            return float(np.mean([abs(getattr(o, attr) - o.true_accuracy) for o in known]))

        return {
            "atc": mae("estimated_accuracy"),
            "ac": mae("average_confidence"),
            "doc": mae("doc_accuracy"),
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN as None)."""
        low, high = self.false_alarm_interval
        out = {
            "batch_size": self.batch_size,
            "n_benign": len(self.benign),
            "false_alarm_rate": self.false_alarm_rate,
            "false_alarm_interval": [low, high],
            "benign_coverage": self.benign_coverage,
            "benign_errors": self.errors(self.benign),
            "n_shifted": len(self.shifted),
            "detection_rate": self.detection_rate,
            "detection_by_shift": self.detection_by_shift,
            "shifted_errors": self.errors(),
            "shifted": [{**vars(o), "covered": o.covered} for o in self.shifted],
        }
        return _finite(out)


def detector_self_test(
    reference: MonitoringReference,
    held_out_probs: Any,
    held_out_embeddings: Any,
    held_out_targets: Any,
    *,
    alarm: Alarm,
    batch_size: int = 500,
    n_benign: int = 20,
    shifts: Iterable[ShiftedBatch | tuple] = (),
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    n_permutations: int | None = None,
    drift_p_min: float | None = None,
    seed: int = 0,
) -> SelfTestResult:
    """False-alarm rate on benign batches and detection rate on shifted ones (module
    docstring).

    Args:
        reference: the model version's reference.
        held_out_probs: ``(N, K)`` the model's probabilities on a labelled held-out split
            that did not fit the reference.
        held_out_embeddings: ``(N, D)`` its embeddings.
        held_out_targets: ``(N,)`` its class indices.
        alarm: ``(metrics, bounds) -> bool``, True when the monitoring should alarm.
        batch_size: images per benign batch, at least 2 (at most ``N``).
        n_benign: benign batches, at least 1.
        shifts: :class:`ShiftedBatch` es, or tuples ``(name, probs, embeddings,
            true_accuracy)`` of the same meaning.
        confidence, n_resamples, n_permutations, drift_p_min: passed to
            :func:`assess_batch` (``n_permutations=None``: its default, raised to what
            ``drift_p_min``, the policy's drift threshold, needs).
        seed: seeds the benign draws and every assessment.

    Raises:
        ValueError: on an invalid input or option (the message names it).
        TypeError: ``alarm`` is not callable or returns something else than a bool.
    """
    if not callable(alarm):
        raise TypeError(f"Expected `alarm` to be callable, but got {type(alarm).__name__}.")
    k = reference.n_classes
    probs = as_probs(held_out_probs, n_classes=k, name="held_out_probs")
    embeddings = as_embeddings(
        held_out_embeddings, dim=reference.dim, n_rows=len(probs), name="held_out_embeddings"
    )
    targets = as_targets(held_out_targets, n_classes=k, n_rows=len(probs), name="held_out_targets")
    batch_size = check_count(batch_size, "batch_size", 2)
    if batch_size > len(probs):
        raise ValueError(
            f"Expected `batch_size` at most the held-out images ({len(probs)}), but got "
            f"{batch_size}. Lower batch_size or pass a larger held-out split."
        )
    n_benign = check_count(n_benign, "n_benign", 1)
    seed = check_seed(seed)
    options = {
        "confidence": confidence,
        "n_resamples": n_resamples,
        # Resolved once, so an impossible drift threshold fails before any batch.
        "n_permutations": drift_permutations(n_permutations, drift_p_min),
        "drift_p_min": drift_p_min,
    }
    batches = [_as_shifted(s, i) for i, s in enumerate(shifts)]

    rng = np.random.default_rng(derive_seed(seed, "monitoring.selftest"))
    correct = probs.argmax(axis=1) == targets
    benign = []
    for b in range(n_benign):
        index = rng.choice(len(probs), size=batch_size, replace=False)
        benign.append(
            _outcome(
                "benign",
                float(correct[index].mean()),
                probs[index],
                embeddings[index],
                None,
                reference,
                alarm,
                options,
                derive_seed(seed, f"benign.{b}"),
            )
        )
    shifted = [
        _outcome(
            s.name,
            float(s.true_accuracy),
            s.probs,
            s.embeddings,
            s.noise_sigmas,
            reference,
            alarm,
            options,
            derive_seed(seed, f"shifted.{i}"),
        )
        for i, s in enumerate(batches)
    ]
    return SelfTestResult(tuple(benign), tuple(shifted), batch_size, float(confidence))


def _as_shifted(value: ShiftedBatch | tuple, i: int) -> ShiftedBatch:
    if isinstance(value, ShiftedBatch):
        return value
    if isinstance(value, tuple) and len(value) in (3, 4):
        return ShiftedBatch(*value)
    raise ValueError(
        f"Expected shifts[{i}] to be a ShiftedBatch or a tuple (name, probs, embeddings, "
        f"true_accuracy), but got {type(value).__name__}"
        + (f" of length {len(value)}" if isinstance(value, tuple) else "")
        + "."
    )


def _outcome(
    name: str,
    true_accuracy: float,
    probs: Any,
    embeddings: Any,
    sigmas: Any,
    reference: MonitoringReference,
    alarm: Alarm,
    options: Mapping[str, Any],
    seed: int,
) -> BatchOutcome:
    result = assess_batch(probs, embeddings, reference, noise_sigmas=sigmas, seed=seed, **options)
    fired = alarm(result.metrics(), result.bounds())
    if not isinstance(fired, bool | np.bool_):
        raise TypeError(
            f"Expected `alarm` to return a bool, but it returned {fired!r} of type "
            f"{type(fired).__name__}."
        )
    return BatchOutcome(
        name=name,
        alarmed=bool(fired),
        true_accuracy=true_accuracy,
        estimated_accuracy=result.accuracy.estimate,
        lower=result.accuracy.lower,
        upper=result.accuracy.upper,
        average_confidence=result.average_confidence,
        doc_accuracy=result.doc_accuracy,
        drift_p_value=result.drift.p_value,
    )


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return float(np.mean(values)) if values else math.nan


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
