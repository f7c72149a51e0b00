r"""Membership-inference risk of a classifier: the loss-threshold attack, held out.

**The attack.** Yeom et al., "Privacy Risk in Machine Learning: Analyzing the Connection
to Overfitting", CSF 2018 (https://arxiv.org/abs/1709.01604), §3.2: an adversary who sees
a sample's loss :math:`\ell(x, y)` guesses "member of the training set" when
:math:`\ell(x, y) \le \tau`. With :math:`F_\mathrm{in}` and :math:`F_\mathrm{out}` the
distribution functions of the loss of members and of non-members, its membership
advantage (Yeom et al., Def. 4) is

.. math::
    \mathrm{Adv}(\tau) = \Pr[\ell \le \tau \mid \text{member}]
                       - \Pr[\ell \le \tau \mid \text{non-member}]
                       = F_\mathrm{in}(\tau) - F_\mathrm{out}(\tau) = \mathrm{TPR} - \mathrm{FPR},

0 for a model whose losses do not tell members from non-members, 1 for one that gives
itself away completely.

**Why the advantage is held out** (``advantage``). The best threshold *found on the very
losses it is scored on*, :math:`\max_\tau (\widehat{\mathrm{TPR}} - \widehat{\mathrm{FPR}})`
(Youden's J of the empirical ROC curve, kept as ``advantage_in_sample``), is optimistic: it
is the one-sided two-sample Kolmogorov-Smirnov statistic, which under no leakage at all
(:math:`F_\mathrm{in} = F_\mathrm{out}`) averages about
:math:`\sqrt{\pi/8}\,\sqrt{2/n} \approx 0.89/\sqrt{n}` for ``n`` members and ``n``
non-members (0.037 at n = 512): a gate at 0.02 would fail a model that leaks nothing.
Instead the threshold is *fitted* on one half of the members and non-members and *scored*
on the other half, and the roles are then swapped (two-fold cross-fitting; Chernozhukov
et al., "Double/debiased machine learning", Econometrics J. 21, 2018, §3, for the
principle). With folds :math:`A` and :math:`B`, :math:`\hat\tau_A` is fitted on fold
:math:`A`: the lowest loss of the fold at which
:math:`\widehat{\mathrm{TPR}}_A - \widehat{\mathrm{FPR}}_A` is largest, moved halfway to
the fold's next larger loss (every threshold in that gap has the same score on the fold;
the midpoint, as a maximum-margin cut, favours neither side), or :math:`-\infty`
("never a member") when no threshold scores above 0. Then

.. math::
    k_\mathrm{in} = \#\{i \in \mathrm{in}_B : \ell_i \le \hat\tau_A\}
                  + \#\{i \in \mathrm{in}_A : \ell_i \le \hat\tau_B\}, \qquad
    \widehat{\mathrm{Adv}} = \frac{k_\mathrm{in}}{n_\mathrm{in}}
                           - \frac{k_\mathrm{out}}{n_\mathrm{out}}

(:math:`k_\mathrm{out}` likewise over the non-members): every sample is judged by a
threshold that never saw it. With folds of equal size this is the mean of the two
split-half advantages. It estimates
:math:`\bar{\mathrm{Adv}} = \frac{|B|}{n}\mathrm{Adv}(\hat\tau_A) + \frac{|A|}{n}
\mathrm{Adv}(\hat\tau_B)`, the advantage on fresh samples of an adversary who tunes its
threshold on ``n / 2`` known members and non-members; it is 0 in expectation (and can be
slightly negative) when nothing leaks, and at most the population's best advantage
:math:`\max_\tau \mathrm{Adv}(\tau)`, which it approaches as ``n`` grows.

**Its interval** (``advantage_lower``, ``advantage_upper``, two-sided at ``confidence``)
is Newcombe's hybrid score interval for the difference of two independent proportions
(Newcombe 1998, "Interval estimation for the difference between independent proportions:
comparison of eleven methods", Stat. Med. 17, 873-890, method 10), applied to
:math:`d = p_1 - p_0` with :math:`p_1 = k_\mathrm{in} / n_\mathrm{in}` (TPR) and
:math:`p_0 = k_\mathrm{out} / n_\mathrm{out}` (FPR): with :math:`(l_j, u_j)` Wilson's score
interval of :math:`p_j` (Wilson 1927, JASA 22),

.. math::
    \Big[d - \sqrt{(p_1 - l_1)^2 + (u_0 - p_0)^2},\;
          d + \sqrt{(u_1 - p_1)^2 + (p_0 - l_0)^2}\Big].

Why this interval: given the threshold fitted on the other fold, the held-out members
(non-members) of a fold are independent Bernoulli trials, so TPR and FPR are binomial
proportions and the advantage a difference of two of them. Newcombe's interval stays
inside [-1, 1], behaves at counts of 0 and ``n`` (a perfect attack) where the Wald
interval collapses, is deterministic and needs no resampling; the exact unconditional
intervals (Chan & Zhang 1999) are conservative and cost a search over a nuisance
parameter. Pooling the two folds ignores a weak dependence between them (each fold both
fits one threshold and is scored by the other); in 2,000 seeded simulations per case
(normal losses, n = 100, 512 and 750, best advantages of 0 to 0.87) the interval covered
:math:`\bar{\mathrm{Adv}}` in 93.3-95.9 % of them at ``confidence = 0.95``, and 0 in
95.5 % (n = 512) when nothing leaked. A gate on the *upper* bound passes a model only if
even the upper bound is small: without any leak it averages about 0.054 at n = 512 and
0.046 at n = 750 (about :math:`1.2/\sqrt{n}`), so such a gate cannot be set much below
0.1 at these sample sizes.

**The other numbers** are left in-sample, as none picks a threshold by maximising its own
score: ``auc`` (the ROC curve ranks the samples by the score :math:`-\ell`; 0.5: chance) is
the Mann-Whitney statistic :math:`\Pr[\ell_\mathrm{in} < \ell_\mathrm{out}] + \frac12
\Pr[\ell_\mathrm{in} = \ell_\mathrm{out}]`, an unbiased estimate with no threshold at all
(exactly 0.5 in expectation without a leak). ``yeom_advantage`` is Yeom's adversary, which
takes :math:`\tau` = the mean training loss (here the mean over every member given): one
average, whose reuse on the members it averages biases the advantage by O(1/n) only.
``tpr_at_1pct_fpr`` follows Carlini et al., "Membership Inference Attacks From First
Principles", IEEE S&P 2022 (https://arxiv.org/abs/2112.03570), §3: an attack matters when
it identifies *some* members with near certainty. It is the largest TPR on the ROC curve
with FPR <= 1 % (with fewer than 100 non-members, the TPR at FPR = 0); its threshold is
set by the non-members' losses alone, so the members' TPR at it is not selected on the
members (its value without a leak is about 0.01, not 0).

**Balanced and seeded.** The attack's prior is 50 % members. One generator,
``numpy.random.default_rng(seed)``, first subsamples the larger set without replacement
to the size ``n`` of the smaller one (sorted positions), then splits each set at random:
``rng.permutation(n)`` of the members, then of the non-members; the first ``n // 2`` of
each form fold A, the rest fold B (so ``n >= 2`` is needed). The counts used and given are
in the result. The ROC curves and the AUC come from scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor

from tai.inputs import check_confidence

__all__ = [
    "HeldOutAdvantage",
    "MembershipInference",
    "membership_inference",
    "newcombe_interval",
    "per_sample_loss",
    "split_half_advantage",
]

LOW_FPR = 0.01
_TIE_TOLERANCE = 1e-12

ArrayLike = Tensor | np.ndarray | Sequence[float]


@dataclass(frozen=True)
class HeldOutAdvantage:
    """The cross-fitted advantage of the loss-threshold attack (see the module docstring).

    Attributes:
        advantage: ``members_flagged / n_members - nonmembers_flagged / n_nonmembers``,
            each sample judged by the threshold fitted on the other fold; in ``[-1, 1]``.
        lower: lower bound of Newcombe's interval of ``advantage``.
        upper: upper bound of it.
        confidence: two-sided level of the interval.
        members_flagged: members guessed "member" by the other fold's threshold.
        nonmembers_flagged: non-members guessed "member" by the other fold's threshold.
        n_members: members of both folds.
        n_nonmembers: non-members of both folds.
        thresholds: the loss thresholds fitted on fold one and on fold two ("member" when
            loss <= it; ``-inf`` when no threshold beats guessing "non-member" always).
    """

    advantage: float
    lower: float
    upper: float
    confidence: float
    members_flagged: int
    nonmembers_flagged: int
    n_members: int
    n_nonmembers: int
    thresholds: tuple[float, float]


@dataclass(frozen=True)
class MembershipInference:
    """Success of the loss-threshold membership-inference attack.

    Attributes:
        auc: area under the attack's ROC curve (score ``-loss``); 0.5 is chance.
        advantage: held-out (cross-fitted) membership advantage ``TPR - FPR``, each
            sample judged by a threshold fitted on the other half; in ``[-1, 1]``, about 0
            without a leak.
        advantage_lower: lower bound of its confidence interval (Newcombe).
        advantage_upper: upper bound of its confidence interval (Newcombe).
        confidence: two-sided level of that interval.
        yeom_advantage: ``TPR - FPR`` at Yeom's threshold, the mean member loss (over all
            members given); in ``[-1, 1]``.
        tpr_at_1pct_fpr: largest TPR on the ROC curve with FPR <= 0.01 (Carlini et al.).
        advantage_in_sample: ``max_t (TPR - FPR)`` over all thresholds, found and scored on
            the same losses (Youden's J); optimistic, for comparison only.
        n_members: members used (after balancing).
        n_nonmembers: non-members used (after balancing); equals ``n_members``.
        n_members_given: members passed in.
        n_nonmembers_given: non-members passed in.
        members_flagged: members guessed "member" by the threshold of the other half.
        nonmembers_flagged: non-members guessed "member" by the threshold of the other half.
        thresholds: the loss thresholds fitted on the first and on the second half.
    """

    auc: float
    advantage: float
    advantage_lower: float
    advantage_upper: float
    confidence: float
    yeom_advantage: float
    tpr_at_1pct_fpr: float
    advantage_in_sample: float
    n_members: int
    n_nonmembers: int
    n_members_given: int
    n_nonmembers_given: int
    members_flagged: int
    nonmembers_flagged: int
    thresholds: tuple[float, float]

    @property
    def advantage_bounds(self) -> tuple[float, float]:
        """``(advantage_lower, advantage_upper)``."""
        return self.advantage_lower, self.advantage_upper

    def as_dict(self) -> dict[str, float]:
        """Flat scalars for logging: ``mia_auc``, ``mia_advantage`` (held out) with
        ``mia_advantage_lower`` and ``mia_advantage_upper``, ``mia_yeom_advantage``,
        ``mia_tpr_at_1pct_fpr``, ``mia_advantage_in_sample``, ``mia_confidence``,
        ``mia_n_members`` and ``mia_n_nonmembers`` (counts used)."""
        return {
            "mia_auc": self.auc,
            "mia_advantage": self.advantage,
            "mia_advantage_lower": self.advantage_lower,
            "mia_advantage_upper": self.advantage_upper,
            "mia_yeom_advantage": self.yeom_advantage,
            "mia_tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "mia_advantage_in_sample": self.advantage_in_sample,
            "mia_confidence": self.confidence,
            "mia_n_members": float(self.n_members),
            "mia_n_nonmembers": float(self.n_nonmembers),
        }


# --------------------------------------------------------------------------- validation


def _losses(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Expected `{name}` to be a 1-D sequence of per-sample losses, but got "
            f"{type(values).__name__} that does not convert to floats ({error})."
        ) from error
    if array.ndim != 1:
        raise ValueError(
            f"Expected `{name}` of shape (N,), one loss per sample, but got shape "
            f"{array.shape}. Use per_sample_loss() or reduction='none'."
        )
    if array.size == 0:
        raise ValueError(
            f"Expected at least one loss in `{name}`, but got none. The attack needs both "
            "members (training samples) and non-members (held-out samples)."
        )
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise ValueError(
            f"Expected finite losses in `{name}`, but {bad} of {array.size} are NaN or inf. "
            "Check the model output for overflow (compute the loss from logits)."
        )
    return array


def _arg_validation(seed: int, batch_size: int | None = None) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(
            f"Expected argument `seed` to be an integer, but got {seed!r}. "
            "The same seed subsamples the same samples."
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"Expected `batch_size` to be an integer >= 1, but got {batch_size!r}.")


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}, but got {value!r}.")
    return int(value)


# --------------------------------------------------------------------------- computation


def _balance(
    members: np.ndarray, nonmembers: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger set, without replacement, to the size of the smaller one."""
    n = min(members.size, nonmembers.size)

    def draw(values: np.ndarray) -> np.ndarray:
        if values.size == n:
            return values
        return values[np.sort(rng.choice(values.size, size=n, replace=False))]

    return draw(members), draw(nonmembers)


def _roc(members: np.ndarray, nonmembers: np.ndarray):
    """Every point of the ROC curve of the score ``-loss`` (labels: 1 = member)."""
    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    scores = -np.concatenate([members, nonmembers])
    # Every point: dropping "intermediate" ones could drop the best TPR at FPR <= 1 %.
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    return labels, scores, fpr, tpr, thresholds


def _fit_threshold(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """The loss threshold ``tau`` (guess "member" when loss <= tau) fitted on these losses:
    the lowest loss at which ``TPR - FPR`` is within rounding of its best, moved halfway to
    the next larger loss; ``-inf`` (guess "non-member" always) when no threshold beats it."""
    *_, fpr, tpr, thresholds = _roc(members, nonmembers)
    j = tpr - fpr
    best = int(np.flatnonzero(j >= j.max() - _TIE_TOLERANCE)[0])
    # roc_curve's first threshold is +inf (accept nothing): loss <= -inf. Its thresholds
    # are every distinct score -loss, decreasing; a best above 0 is never the last one
    # (TPR = FPR = 1 there), so the next larger loss exists.
    if not math.isfinite(thresholds[best]):
        return -math.inf
    return -(float(thresholds[best]) / 2 + float(thresholds[best + 1]) / 2)


def _rate_at(losses: np.ndarray, threshold: float) -> float:
    return float(np.mean(losses <= threshold))


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


# --------------------------------------------------------------------------- public API


def newcombe_interval(
    successes_1: int, n_1: int, successes_2: int, n_2: int, confidence: float = 0.95
) -> tuple[float, float]:
    r"""Newcombe's hybrid score interval of ``successes_1 / n_1 - successes_2 / n_2``, two
    independent proportions (Newcombe 1998, Stat. Med. 17, method 10; the formula is in the
    module docstring), from the two Wilson score intervals.

    Args:
        successes_1: successes of the first sample, ``0 <= successes_1 <= n_1``.
        n_1: size of the first sample, ``>= 1``.
        successes_2: successes of the second sample, ``0 <= successes_2 <= n_2``.
        n_2: size of the second sample, ``>= 1``.
        confidence: two-sided coverage in ``(0, 1)``.

    Returns:
        ``(lower, upper)``, inside ``[-1, 1]``.

    Raises:
        ValueError: if a count is not an integer in range or ``confidence`` not in (0, 1).

    Example:
        >>> lower, upper = newcombe_interval(2, 4, 1, 4)
        >>> round(lower, 4), round(upper, 4)
        (-0.3196, 0.6553)
    """
    n_1, n_2 = _count("n_1", n_1, 1), _count("n_2", n_2, 1)
    k_1, k_2 = _count("successes_1", successes_1, 0), _count("successes_2", successes_2, 0)
    if k_1 > n_1 or k_2 > n_2:
        raise ValueError(
            f"Expected at most `n` successes in each sample, but got {k_1} of {n_1} and "
            f"{k_2} of {n_2}."
        )
    check_confidence(confidence)
    z = float(norm.ppf(0.5 + confidence / 2))
    p_1, p_2 = k_1 / n_1, k_2 / n_2
    l_1, u_1 = _wilson(k_1, n_1, z)
    l_2, u_2 = _wilson(k_2, n_2, z)
    difference = p_1 - p_2
    lower = difference - math.sqrt((p_1 - l_1) ** 2 + (u_2 - p_2) ** 2)
    upper = difference + math.sqrt((u_1 - p_1) ** 2 + (p_2 - l_2) ** 2)
    return max(-1.0, lower), min(1.0, upper)


def split_half_advantage(
    fold_one: tuple[ArrayLike, ArrayLike],
    fold_two: tuple[ArrayLike, ArrayLike],
    *,
    confidence: float = 0.95,
) -> HeldOutAdvantage:
    """The cross-fitted advantage of the loss-threshold attack on two given folds.

    Fits a threshold with the best ``TPR - FPR`` on each fold, judges every sample of the
    other fold by it, and pools the counts (formulas and interval in the
    module docstring). :func:`membership_inference` draws the folds at random; this
    function takes them as they are.

    Args:
        fold_one: ``(member_losses, nonmember_losses)`` of the first fold.
        fold_two: ``(member_losses, nonmember_losses)`` of the second fold.
        confidence: two-sided level of the interval, in ``(0, 1)``.

    Returns:
        A :class:`HeldOutAdvantage`.

    Raises:
        ValueError: if a fold lacks members or non-members, holds NaN or inf, or
            ``confidence`` is not in (0, 1).

    Example:
        >>> held_out = split_half_advantage(([0.1, 0.4], [0.3, 0.8]), ([0.18, 0.5], [0.15, 0.6]))
        >>> held_out.thresholds, held_out.members_flagged, held_out.nonmembers_flagged
        ((0.2, 0.55), 3, 2)
        >>> held_out.advantage, round(held_out.lower, 4), round(held_out.upper, 4)
        (0.25, -0.3196, 0.6553)
    """
    check_confidence(confidence)
    folds = [
        (_losses(fold[0], f"{name}[0] (members)"), _losses(fold[1], f"{name}[1] (non-members)"))
        for name, fold in (("fold_one", fold_one), ("fold_two", fold_two))
    ]
    thresholds = (_fit_threshold(*folds[0]), _fit_threshold(*folds[1]))
    # Fold one is judged by fold two's threshold and fold two by fold one's.
    members_flagged = sum(
        int(np.count_nonzero(members <= tau))
        for (members, _), tau in zip(folds, thresholds[::-1], strict=True)
    )
    nonmembers_flagged = sum(
        int(np.count_nonzero(nonmembers <= tau))
        for (_, nonmembers), tau in zip(folds, thresholds[::-1], strict=True)
    )
    n_members = sum(members.size for members, _ in folds)
    n_nonmembers = sum(nonmembers.size for _, nonmembers in folds)
    lower, upper = newcombe_interval(
        members_flagged, n_members, nonmembers_flagged, n_nonmembers, confidence
    )
    return HeldOutAdvantage(
        advantage=members_flagged / n_members - nonmembers_flagged / n_nonmembers,
        lower=lower,
        upper=upper,
        confidence=float(confidence),
        members_flagged=members_flagged,
        nonmembers_flagged=nonmembers_flagged,
        n_members=int(n_members),
        n_nonmembers=int(n_nonmembers),
        thresholds=thresholds,
    )


def membership_inference(
    member_losses: ArrayLike,
    nonmember_losses: ArrayLike,
    *,
    seed: int = 0,
    confidence: float = 0.95,
) -> MembershipInference:
    """Loss-threshold membership inference (Yeom et al. 2018) on per-sample losses.

    The formulas are in the module docstring. The larger of the two sets is subsampled
    (seeded) to the size of the smaller one, so the attack is judged on balanced classes;
    both are then split in seeded halves for the held-out ``advantage``
    (:func:`split_half_advantage`).

    Args:
        member_losses: ``(N_m,)`` losses of training samples (tensor, array or sequence).
        nonmember_losses: ``(N_n,)`` losses of held-out samples from the same distribution.
        seed: seed of the subsampling and of the split.
        confidence: two-sided level of the interval of ``advantage``, in ``(0, 1)``.

    Returns:
        A :class:`MembershipInference`.

    Raises:
        ValueError: if a set is empty, not 1-D, or holds NaN or inf, if the smaller set
            has fewer than 2 losses (nothing to split), or ``confidence`` is not in (0, 1).

    Example:
        >>> result = membership_inference([0.1, 0.2, 0.3, 0.35], [0.25, 0.5, 0.9, 1.2])
        >>> round(result.auc, 4), round(result.advantage_in_sample, 4)
        (0.875, 0.75)
        >>> round(result.yeom_advantage, 4), round(result.tpr_at_1pct_fpr, 4)
        (0.5, 0.5)
        >>> result.advantage_lower <= result.advantage <= result.advantage_upper
        True
    """
    _arg_validation(seed)
    check_confidence(confidence)
    members_given = _losses(member_losses, "member_losses")
    nonmembers_given = _losses(nonmember_losses, "nonmember_losses")
    n = min(members_given.size, nonmembers_given.size)
    if n < 2:
        raise ValueError(
            f"Expected at least 2 members and 2 non-members, but got {members_given.size} "
            f"and {nonmembers_given.size}: the held-out advantage fits its threshold on one "
            "half of each and scores it on the other."
        )
    rng = np.random.default_rng(seed)
    members, nonmembers = _balance(members_given, nonmembers_given, rng)
    members, nonmembers = members[rng.permutation(n)], nonmembers[rng.permutation(n)]
    half = n // 2
    held_out = split_half_advantage(
        (members[:half], nonmembers[:half]),
        (members[half:], nonmembers[half:]),
        confidence=confidence,
    )

    labels, scores, fpr, tpr, _ = _roc(members, nonmembers)
    yeom_threshold = float(members_given.mean())
    return MembershipInference(
        auc=float(roc_auc_score(labels, scores)),
        advantage=held_out.advantage,
        advantage_lower=held_out.lower,
        advantage_upper=held_out.upper,
        confidence=held_out.confidence,
        yeom_advantage=_rate_at(members, yeom_threshold) - _rate_at(nonmembers, yeom_threshold),
        tpr_at_1pct_fpr=float(tpr[fpr <= LOW_FPR].max()),
        advantage_in_sample=float((tpr - fpr).max()),
        n_members=int(members.size),
        n_nonmembers=int(nonmembers.size),
        n_members_given=int(members_given.size),
        n_nonmembers_given=int(nonmembers_given.size),
        members_flagged=held_out.members_flagged,
        nonmembers_flagged=held_out.nonmembers_flagged,
        thresholds=held_out.thresholds,
    )


@torch.no_grad()
def per_sample_loss(
    model: Callable[[Tensor], Tensor], images: Tensor, targets: Tensor, batch_size: int = 256
) -> Tensor:
    """Cross-entropy loss of each sample, in batches of at most ``batch_size``.

    Runs under ``torch.no_grad``; put the model in eval mode (dropout and batch norm off) and
    on the images' device before, as a membership-inference adversary queries the deployed
    model.

    Args:
        model: maps a batch of inputs ``(B, ...)`` to logits ``(B, K)``.
        images: ``(N, ...)`` inputs.
        targets: ``(N,)`` integer class indices.
        batch_size: samples per forward pass.

    Returns:
        ``(N,)`` float tensor of losses on the CPU, in the order of ``images``.

    Raises:
        ValueError: for mismatched or empty inputs, non-integer targets, or a model that
            does not return ``(B, K)`` logits.
    """
    _arg_validation(0, batch_size)
    if not isinstance(images, Tensor) or not isinstance(targets, Tensor):
        raise ValueError(
            "Expected `images` and `targets` to be torch tensors, but got "
            f"{type(images).__name__} and {type(targets).__name__}."
        )
    if targets.ndim != 1 or targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(
            f"Expected `targets` of shape (N,) with integer class indices, but got shape "
            f"{tuple(targets.shape)} and dtype {targets.dtype}."
        )
    if images.ndim < 1 or images.shape[0] != targets.shape[0] or targets.numel() == 0:
        raise ValueError(
            f"Expected one target per input and at least one sample, but got "
            f"{images.shape[0] if images.ndim else 0} inputs and {targets.numel()} targets."
        )
    losses = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        logits = model(batch)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != len(batch):
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"Expected `model` to return logits of shape ({len(batch)}, num_classes) "
                f"for a batch of {len(batch)} inputs, but got {shape}."
            )
        labels = targets[start : start + batch_size].to(logits.device).long()
        losses.append(F.cross_entropy(logits, labels, reduction="none").cpu())
    return torch.cat(losses)
