r"""Statistical significance for gates: intervals of proportions and paired comparisons.

A gate on a point estimate judges noise as much as the model: on 1,000 test images an
accuracy of 0.97 has a 95% interval of about ``[0.958, 0.978]``. This module gives the
intervals and tests a gate policy needs to judge a bound instead (see :mod:`tai.gates.policy`).

- :func:`proportion_interval`: an interval of a proportion ``k / n`` (e.g. accuracy),
  Wilson's score interval (Wilson 1927, "Probable inference, the law of succession, and
  statistical inference", JASA 22) or the exact Clopper-Pearson interval (Clopper &
  Pearson 1934, Biometrika 26), both computed by :func:`scipy.stats.binomtest`.
- :func:`mcnemar_test`: the exact McNemar test of two classifiers judged on the same
  samples (McNemar 1947, Psychometrika 12; Dietterich 1998, "Approximate statistical
  tests for comparing supervised classification learning algorithms", Neural Comput. 10).
  Of the ``b`` samples only ``a`` gets right and the ``c`` only ``b`` gets right, under
  the null hypothesis of equal accuracy each is a fair coin: the two-sided p-value is that
  of ``c ~ Binomial(b + c, 1/2)`` (:func:`scipy.stats.binomtest`).
- :func:`accuracy_difference`: the paired difference of two accuracies, with Newcombe's
  square-and-add interval for paired proportions (Newcombe 1998, "Improved confidence
  intervals for the difference between binomial proportions based on paired data",
  Stat. Med. 17, method 10; as in Fagerland, Lydersen & Laake 2017, "Statistical
  Analysis of Contingency Tables", ch. 8) or a paired bootstrap, plus McNemar's p-value.
- :func:`paired_bootstrap`: the difference ``metric(b) - metric(a)`` of any metric with a
  percentile-bootstrap interval (Efron & Tibshirani 1993, "An Introduction to the
  Bootstrap", ch. 13), both models resampled on the same indices so that what they share
  (hard images, label noise) cancels.

By convention ``a`` is the reference (the champion) and ``b`` the candidate (the
challenger): a positive difference means ``b`` scores higher.

Paired correctness arrays are 1-D boolean (or 0/1) numpy arrays or tensors of length
``N``, element ``i`` saying whether the model got sample ``i`` right.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import binomtest

from tai.inputs import check_confidence
from tai.principles.reliability.sample_metrics import accuracy

__all__ = [
    "McNemarResult",
    "PairedDifference",
    "ProportionInterval",
    "accuracy",
    "accuracy_difference",
    "mcnemar_test",
    "paired_bootstrap",
    "proportion_interval",
]

# scipy's names of the interval methods, by the names this module accepts.
_PROPORTION_METHODS = {"wilson": "wilson", "clopper-pearson": "exact"}
_DIFFERENCE_METHODS = ("newcombe", "bootstrap")
# Most resampled indices held in memory at once by the bootstrap (about 32 MiB of int64).
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ProportionInterval:
    """A proportion ``successes / n`` with a two-sided confidence interval.

    Attributes:
        estimate: ``successes / n``.
        lower: lower bound of the interval.
        upper: upper bound of the interval.
        successes: number of successes.
        n: number of trials.
        confidence: two-sided coverage of the interval, e.g. ``0.95``.
        method: ``"wilson"`` or ``"clopper-pearson"``.
    """

    estimate: float
    lower: float
    upper: float
    successes: int
    n: int
    confidence: float
    method: str

    def as_dict(self) -> dict[str, float]:
        """``estimate``, ``lower`` and ``upper`` as floats."""
        return {"estimate": self.estimate, "lower": self.lower, "upper": self.upper}


@dataclass(frozen=True)
class McNemarResult:
    """The exact McNemar test of two classifiers on the same samples.

    Attributes:
        b: samples classifier ``a`` gets right and ``b`` gets wrong.
        c: samples classifier ``a`` gets wrong and ``b`` gets right.
        p_value: two-sided exact p-value of equal accuracy; ``1.0`` when ``b + c == 0``.
        n: number of samples.
    """

    b: int
    c: int
    p_value: float
    n: int

    def as_dict(self) -> dict[str, float]:
        """The discordant counts and the p-value as floats."""
        return {"b": float(self.b), "c": float(self.c), "p_value": self.p_value}


@dataclass(frozen=True)
class PairedDifference:
    """The difference ``metric(b) - metric(a)`` of two models on the same samples.

    Attributes:
        diff: ``value_b - value_a``; positive when ``b`` (the challenger) scores higher.
        lower: lower bound of the two-sided interval of ``diff``.
        upper: upper bound of that interval.
        confidence: two-sided coverage of the interval, e.g. ``0.95``.
        value_a: the metric of ``a`` (the reference, e.g. the champion).
        value_b: the metric of ``b`` (the candidate, e.g. the challenger).
        n: number of paired samples.
        method: how the interval was computed: ``"newcombe"`` or ``"bootstrap"``.
        p_value: p-value of "no difference" where a test was made, else ``nan``.
        test: name of that test (e.g. ``"McNemar exact"``), else ``""``.
    """

    diff: float
    lower: float
    upper: float
    confidence: float
    value_a: float
    value_b: float
    n: int
    method: str
    p_value: float = math.nan
    test: str = ""

    def as_dict(self) -> dict[str, float]:
        """Every number of the comparison as a float."""
        return {
            "diff": self.diff,
            "lower": self.lower,
            "upper": self.upper,
            "confidence": self.confidence,
            "value_a": self.value_a,
            "value_b": self.value_b,
            "p_value": self.p_value,
        }


# --------------------------------------------------------------------------- validation


def _check_confidence(confidence: float) -> None:
    check_confidence(confidence)


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"Expected argument `{name}` to be an integer >= {minimum}, got {value!r}."
        )


def _check_bootstrap(n_resamples: int, seed: int) -> None:
    _check_count("n_resamples", n_resamples, 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(
            f"Expected argument `seed` to be an integer, but got {seed!r}. "
            "The same seed gives the same interval."
        )


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _correctness(name: str, x: Any) -> np.ndarray:
    array = _to_numpy(x)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"Expected `{name}` to be a non-empty 1-D array of per-sample correctness, but "
            f"got shape {tuple(array.shape)}."
        )
    if array.dtype != np.bool_:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(
                f"Expected `{name}` to hold booleans or 0/1 (sample i right or wrong), but it "
                f"holds other values, e.g. {array[~np.isin(array, (0, 1))][0].item()!r}."
            )
        array = array.astype(bool)
    return array


def _paired_correctness(correct_a: Any, correct_b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = _correctness("correct_a", correct_a)
    b = _correctness("correct_b", correct_b)
    if a.shape != b.shape:
        raise ValueError(
            f"Paired comparisons need the same samples for both models, but got {a.size} "
            f"and {b.size} samples."
        )
    return a, b


# --------------------------------------------------------------------------- proportions


def proportion_interval(
    successes: int, n: int, confidence: float = 0.95, method: str = "wilson"
) -> ProportionInterval:
    """A two-sided confidence interval of the proportion ``successes / n``.

    Args:
        successes: number of successes, ``0 <= successes <= n``.
        n: number of trials, ``>= 1``.
        confidence: two-sided coverage in ``(0, 1)``.
        method: ``"wilson"`` (score interval; good coverage, the default) or
            ``"clopper-pearson"`` (exact, conservative).

    Returns:
        A :class:`ProportionInterval`.

    Raises:
        ValueError: if an argument is invalid.

    Example:
        >>> iv = proportion_interval(7, 20)
        >>> round(iv.estimate, 4), round(iv.lower, 4), round(iv.upper, 4)
        (0.35, 0.1812, 0.5671)
    """
    _check_count("n", n, 1)
    _check_count("successes", successes, 0)
    if successes > n:
        raise ValueError(f"Expected `successes` <= `n`, but got {successes} successes of {n}.")
    _check_confidence(confidence)
    if method not in _PROPORTION_METHODS:
        raise ValueError(
            f"Expected argument `method` to be one of {tuple(_PROPORTION_METHODS)}, but got "
            f"{method!r}."
        )
    ci = binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=float(confidence), method=_PROPORTION_METHODS[method]
    )
    return ProportionInterval(
        estimate=successes / n,
        lower=float(ci.low),
        upper=float(ci.high),
        successes=int(successes),
        n=int(n),
        confidence=float(confidence),
        method=method,
    )


# --------------------------------------------------------------------------- McNemar


def mcnemar_test(correct_a: Any, correct_b: Any) -> McNemarResult:
    """The exact (binomial) McNemar test of equal accuracy of two paired classifiers.

    Args:
        correct_a: ``(N,)`` booleans, sample ``i`` classified right by model ``a``.
        correct_b: ``(N,)`` booleans, the same for model ``b``.

    Returns:
        A :class:`McNemarResult` with the discordant counts ``b`` (only ``a`` right) and
        ``c`` (only ``b`` right) and the two-sided p-value.

    Raises:
        ValueError: if the arrays are not paired 1-D correctness arrays.

    Example:
        >>> r = mcnemar_test([1, 1, 1, 0, 0, 1], [1, 0, 0, 0, 1, 1])
        >>> r.b, r.c, round(r.p_value, 4)
        (2, 1, 1.0)
    """
    a, b = _paired_correctness(correct_a, correct_b)
    return _mcnemar(a, b)


def _mcnemar(a: np.ndarray, b: np.ndarray) -> McNemarResult:
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    discordant = only_a + only_b
    # binomtest needs at least one trial; with no discordant pair there is no evidence.
    p = 1.0 if discordant == 0 else float(binomtest(only_b, discordant, 0.5).pvalue)
    return McNemarResult(b=only_a, c=only_b, p_value=p, n=int(a.size))


# --------------------------------------------------------------------------- bootstrap


def _resample_chunks(
    n: int, n_resamples: int, seed: int
) -> Iterator[np.ndarray]:  # yields (rows, n) index matrices
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    done = 0
    while done < n_resamples:
        k = min(rows, n_resamples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def _take(x: Any, idx: np.ndarray) -> Any:
    if isinstance(x, torch.Tensor):
        return x[torch.from_numpy(idx).to(x.device)]
    return np.asarray(x)[idx]


def _percentile_interval(diffs: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    lower, upper = np.quantile(diffs, [alpha, 1 - alpha])
    return float(lower), float(upper)


def _bootstrap_mean_difference(
    delta: np.ndarray, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    # Vectorised: each resample's accuracy difference is the mean of the per-sample
    # differences (correct_b - correct_a) over its indices.
    diffs = np.concatenate(
        [delta[idx].mean(axis=1) for idx in _resample_chunks(delta.size, n_resamples, seed)]
    )
    return _percentile_interval(diffs, confidence)


def paired_bootstrap(
    metric_fn: Callable[[Any, Any], float],
    probs_a: Any,
    probs_b: Any,
    targets: Any,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    r"""The difference ``metric_fn(probs_b) - metric_fn(probs_a)`` with a paired interval.

    Each of the ``n_resamples`` resamples draws ``N`` indices with replacement and
    evaluates both models on the same indices; the interval is the
    :math:`(1 - c)/2` and :math:`(1 + c)/2` quantiles (linear interpolation) of the
    resampled differences, ``c = confidence`` (percentile bootstrap). Indices come from
    ``numpy.random.default_rng(seed)`` in chunks of bounded memory, so the same inputs and
    seed give the same interval. ``metric_fn`` is called ``2 * n_resamples + 2`` times,
    except for :func:`accuracy`, which is computed for all resamples at once.

    A resample on which ``metric_fn`` is undefined (``nan``) makes the interval ``nan``.

    Args:
        metric_fn: ``metric_fn(probs, targets) -> float`` on a subset of samples, e.g.
            :func:`accuracy` or
            ``tai.principles.reliability.calibration.expected_calibration_error``.
        probs_a: ``(N, ...)`` outputs of model ``a`` (the champion); numpy or torch.
        probs_b: ``(N, ...)`` outputs of model ``b`` (the challenger).
        targets: ``(N, ...)`` targets shared by both.
        n_resamples: number of bootstrap resamples, ``>= 1``.
        confidence: two-sided coverage in ``(0, 1)``.
        seed: seed of the resampling.

    Returns:
        A :class:`PairedDifference` with ``method="bootstrap"`` and no p-value.

    Raises:
        ValueError: if an argument is invalid or the inputs are not paired.

    Example:
        >>> import numpy as np
        >>> targets = np.array([0, 1, 1, 0, 1, 0])
        >>> probs_a = np.eye(2)[[0, 0, 1, 1, 1, 0]]  # 4 of 6 right
        >>> probs_b = np.eye(2)[[0, 1, 1, 0, 1, 1]]  # 5 of 6 right
        >>> d = paired_bootstrap(accuracy, probs_a, probs_b, targets, n_resamples=200)
        >>> round(d.diff, 4), d.lower <= d.diff <= d.upper
        (0.1667, True)
    """
    _check_bootstrap(n_resamples, seed)
    _check_confidence(confidence)
    n = len(targets)
    if n == 0 or len(probs_a) != n or len(probs_b) != n:
        raise ValueError(
            f"Paired comparisons need the same non-empty samples: got {len(probs_a)} outputs "
            f"of a, {len(probs_b)} outputs of b and {n} targets."
        )
    value_a = float(metric_fn(probs_a, targets))
    value_b = float(metric_fn(probs_b, targets))
    if metric_fn is accuracy:
        t = _to_numpy(targets)
        delta = (_to_numpy(probs_b).argmax(axis=1) == t).astype(np.float64) - (
            _to_numpy(probs_a).argmax(axis=1) == t
        )
        lower, upper = _bootstrap_mean_difference(delta, n_resamples, confidence, seed)
    else:
        diffs = np.array(
            [
                float(metric_fn(_take(probs_b, idx), _take(targets, idx)))
                - float(metric_fn(_take(probs_a, idx), _take(targets, idx)))
                for chunk in _resample_chunks(n, n_resamples, seed)
                for idx in chunk
            ]
        )
        lower, upper = _percentile_interval(diffs, confidence)
    return PairedDifference(
        diff=value_b - value_a,
        lower=lower,
        upper=upper,
        confidence=float(confidence),
        value_a=value_a,
        value_b=value_b,
        n=n,
        method="bootstrap",
    )


# --------------------------------------------------------------------------- accuracy


def accuracy_difference(
    correct_champion: Any,
    correct_challenger: Any,
    confidence: float = 0.95,
    *,
    method: str = "newcombe",
    n_resamples: int = 1000,
    seed: int = 0,
) -> PairedDifference:
    r"""The accuracy of the challenger minus the champion's, on the same samples.

    ``method="newcombe"`` (the default) is Newcombe's square-and-add interval for paired
    proportions (1998, method 10): with Wilson intervals :math:`[l_1, u_1]` of the
    challenger's accuracy :math:`p_1` and :math:`[l_2, u_2]` of the champion's
    :math:`p_2`, and :math:`\psi` the continuity-corrected correlation of the paired
    table,

    .. math::

        L = \hat\theta - \sqrt{(p_1 - l_1)^2 + (u_2 - p_2)^2
            - 2\psi (p_1 - l_1)(u_2 - p_2)}, \quad
        U = \hat\theta + \sqrt{(p_2 - l_2)^2 + (u_1 - p_1)^2
            - 2\psi (p_2 - l_2)(u_1 - p_1)},

    :math:`\hat\theta = p_1 - p_2`. It is written here because neither scipy nor
    statsmodels has a paired-proportions interval; it keeps its coverage near the nominal
    level for small and extreme tables, where the Wald interval does not.
    ``method="bootstrap"`` gives the paired percentile bootstrap instead (vectorised).
    Either way ``p_value`` is the exact McNemar test's.

    Args:
        correct_champion: ``(N,)`` booleans, sample ``i`` right by the champion.
        correct_challenger: ``(N,)`` booleans, the same for the challenger.
        confidence: two-sided coverage in ``(0, 1)``.
        method: ``"newcombe"`` or ``"bootstrap"``.
        n_resamples: bootstrap resamples (``method="bootstrap"`` only).
        seed: seed of the resampling (``method="bootstrap"`` only).

    Returns:
        A :class:`PairedDifference`: ``value_a`` is the champion's accuracy, ``value_b``
        the challenger's, ``test="McNemar exact"``.

    Raises:
        ValueError: if an argument is invalid or the arrays are not paired.

    Example:
        >>> d = accuracy_difference([1, 1, 0, 1, 0, 1, 1, 0], [1, 1, 1, 1, 0, 1, 1, 1])
        >>> round(d.diff, 4), round(d.lower, 4), round(d.upper, 4), round(d.p_value, 4)
        (0.25, -0.1503, 0.5757, 0.5)
    """
    _check_confidence(confidence)
    if method not in _DIFFERENCE_METHODS:
        raise ValueError(
            f"Expected argument `method` to be one of {_DIFFERENCE_METHODS}, but got {method!r}."
        )
    champion, challenger = _paired_correctness(correct_champion, correct_challenger)
    mcnemar = _mcnemar(champion, challenger)
    n = int(champion.size)
    if method == "newcombe":
        lower, upper = _newcombe_paired(champion, challenger, confidence)
    else:
        _check_bootstrap(n_resamples, seed)
        delta = challenger.astype(np.float64) - champion
        lower, upper = _bootstrap_mean_difference(delta, n_resamples, confidence, seed)
    value_a = float(champion.mean())
    value_b = float(challenger.mean())
    return PairedDifference(
        diff=value_b - value_a,
        lower=lower,
        upper=upper,
        confidence=float(confidence),
        value_a=value_a,
        value_b=value_b,
        n=n,
        method=method,
        p_value=mcnemar.p_value,
        test="McNemar exact",
    )


def _newcombe_paired(
    champion: np.ndarray, challenger: np.ndarray, confidence: float
) -> tuple[float, float]:
    # The paired table with the challenger as the first measurement (rows).
    n11 = int(np.count_nonzero(challenger & champion))
    n12 = int(np.count_nonzero(challenger & ~champion))
    n21 = int(np.count_nonzero(~challenger & champion))
    n22 = int(np.count_nonzero(~challenger & ~champion))
    n = n11 + n12 + n21 + n22
    first = proportion_interval(n11 + n12, n, confidence)
    second = proportion_interval(n11 + n21, n, confidence)
    p1, l1, u1 = first.estimate, first.lower, first.upper
    p2, l2, u2 = second.estimate, second.lower, second.upper
    margins = (n11 + n12) * (n21 + n22) * (n11 + n21) * (n12 + n22)
    psi = 0.0
    if margins > 0:
        cross = n11 * n22 - n12 * n21
        if cross > n / 2:
            psi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            psi = cross / math.sqrt(margins)
    theta = p1 - p2
    # max(0, .) guards against a rounding error below zero when the terms cancel.
    d_lower = (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * psi * (p1 - l1) * (u2 - p2)
    d_upper = (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * psi * (p2 - l2) * (u1 - p1)
    return theta - math.sqrt(max(0.0, d_lower)), theta + math.sqrt(max(0.0, d_upper))
