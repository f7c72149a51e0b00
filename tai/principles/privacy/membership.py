r"""Membership-inference risk of a classifier: the loss-threshold attack.

Yeom et al., "Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting",
CSF 2018 (https://arxiv.org/abs/1709.01604), §3.2: an adversary who sees a sample's loss
:math:`\ell(x, y)` guesses "member of the training set" when :math:`\ell(x, y) \le \tau`.
Its membership advantage is

.. math::
    \mathrm{Adv} = \Pr[\text{guess member} \mid \text{member}]
                 - \Pr[\text{guess member} \mid \text{non-member}] = \mathrm{TPR} - \mathrm{FPR},

0 for a model whose losses do not tell members from non-members, 1 for one that gives
itself away completely. Yeom's adversary takes :math:`\tau` = the mean training loss
(``yeom_advantage``); the strongest threshold on the data, :math:`\max_\tau (\mathrm{TPR} -
\mathrm{FPR})`, is Youden's J on the attack's ROC curve (``advantage``). The ROC curve
ranks the samples by the score :math:`-\ell` (higher means "more likely a member"); its AUC
is ``auc`` (0.5: no better than chance).

Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022
(https://arxiv.org/abs/2112.03570), §3 argue that an attack matters when it identifies
*some* members with near certainty, so they report the TPR at a low FPR:
``tpr_at_1pct_fpr`` is the largest TPR on the ROC curve with FPR <= 1 % (with fewer than
100 non-members this is the TPR at FPR = 0).

Balanced evaluation: the attack's prior is 50 % members. When the two sets differ in size,
the larger one is subsampled without replacement to the size of the smaller one with a
seeded generator (``numpy.random.default_rng(seed)``); the counts used and given are in
the result. The ROC curve and AUC come from scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor

__all__ = ["MembershipInference", "membership_inference", "per_sample_loss"]

LOW_FPR = 0.01
_TIE_TOLERANCE = 1e-12

ArrayLike = Tensor | np.ndarray | Sequence[float]


@dataclass(frozen=True)
class MembershipInference:
    """Success of the loss-threshold membership-inference attack.

    Attributes:
        auc: area under the attack's ROC curve (score ``-loss``); 0.5 is chance.
        advantage: best membership advantage ``max_t (TPR - FPR)`` over all thresholds
            (Youden's J); in ``[0, 1]``.
        yeom_advantage: ``TPR - FPR`` at Yeom's threshold, the mean member loss (over all
            members given); in ``[-1, 1]``.
        tpr_at_1pct_fpr: largest TPR on the ROC curve with FPR <= 0.01 (Carlini et al.).
        n_members: members used (after balancing).
        n_nonmembers: non-members used (after balancing); equals ``n_members``.
        n_members_given: members passed in.
        n_nonmembers_given: non-members passed in.
        threshold: the loss threshold of ``advantage``: guess "member" when loss <= it
            (the lowest such threshold when several reach the best advantage).
    """

    auc: float
    advantage: float
    yeom_advantage: float
    tpr_at_1pct_fpr: float
    n_members: int
    n_nonmembers: int
    n_members_given: int
    n_nonmembers_given: int
    threshold: float

    def as_dict(self) -> dict[str, float]:
        """Flat scalars for logging: ``mia_auc``, ``mia_advantage``, ``mia_yeom_advantage``,
        ``mia_tpr_at_1pct_fpr``, ``mia_n_members`` and ``mia_n_nonmembers`` (counts used)."""
        return {
            "mia_auc": self.auc,
            "mia_advantage": self.advantage,
            "mia_yeom_advantage": self.yeom_advantage,
            "mia_tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
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


# --------------------------------------------------------------------------- computation


def _balance(
    members: np.ndarray, nonmembers: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger set, without replacement, to the size of the smaller one."""
    n = min(members.size, nonmembers.size)
    rng = np.random.default_rng(seed)

    def draw(values: np.ndarray) -> np.ndarray:
        if values.size == n:
            return values
        return values[np.sort(rng.choice(values.size, size=n, replace=False))]

    return draw(members), draw(nonmembers)


def _rate_at(losses: np.ndarray, threshold: float) -> float:
    return float(np.mean(losses <= threshold))


# --------------------------------------------------------------------------- public API


def membership_inference(
    member_losses: ArrayLike, nonmember_losses: ArrayLike, *, seed: int = 0
) -> MembershipInference:
    """Loss-threshold membership inference (Yeom et al. 2018) on per-sample losses.

    The formulas are in the module docstring. The larger of the two sets is subsampled
    (seeded) to the size of the smaller one, so the attack is judged on balanced classes.

    Args:
        member_losses: ``(N_m,)`` losses of training samples (tensor, array or sequence).
        nonmember_losses: ``(N_n,)`` losses of held-out samples from the same distribution.
        seed: seed of the subsampling.

    Returns:
        A :class:`MembershipInference`.

    Raises:
        ValueError: if a set is empty, not 1-D, or holds NaN or inf.

    Example:
        >>> result = membership_inference([0.1, 0.2, 0.3], [0.25, 0.5, 0.9])
        >>> round(result.auc, 4), round(result.advantage, 4), round(result.yeom_advantage, 4)
        (0.8889, 0.6667, 0.6667)
        >>> round(result.tpr_at_1pct_fpr, 4)
        0.6667
    """
    _arg_validation(seed)
    members_given = _losses(member_losses, "member_losses")
    nonmembers_given = _losses(nonmember_losses, "nonmember_losses")
    members, nonmembers = _balance(members_given, nonmembers_given, seed)

    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    scores = -np.concatenate([members, nonmembers])
    # Every point: dropping "intermediate" ones could drop the best TPR at FPR <= 1 %.
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    j = tpr - fpr
    # The strictest threshold among those within rounding of the best advantage.
    best = int(np.flatnonzero(j >= j.max() - _TIE_TOLERANCE)[0])
    yeom_threshold = float(members_given.mean())
    return MembershipInference(
        auc=float(roc_auc_score(labels, scores)),
        advantage=float(j.max()),
        yeom_advantage=_rate_at(members, yeom_threshold) - _rate_at(nonmembers, yeom_threshold),
        tpr_at_1pct_fpr=float(tpr[fpr <= LOW_FPR].max()),
        n_members=int(members.size),
        n_nonmembers=int(nonmembers.size),
        n_members_given=int(members_given.size),
        n_nonmembers_given=int(nonmembers_given.size),
        # roc_curve's first threshold is +inf (accept nothing): loss <= -inf.
        threshold=-float(thresholds[best]) if math.isfinite(thresholds[best]) else -math.inf,
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
