r"""The class priors of an unlabelled batch: EM prior adjustment and BBSE.

Under a prior (label) shift the class-conditional distributions :math:`p(x \mid y)` stay
and only the class proportions move from the training priors :math:`\pi` to unknown
:math:`q`. Two estimators of :math:`q`:

EM (Saerens, Latinne & Decaestecker, "Adjusting the Outputs of a Classifier to New a
Priori Probabilities: A Simple Procedure", Neural Computation 14(1), 2002): with the
model's calibrated posteriors :math:`p_{ik} = p(k \mid x_i)` under :math:`\pi`, iterate

.. math::
    p^{(s)}_{ik} = \frac{p_{ik}\, q^{(s)}_k / \pi_k}{\sum_l p_{il}\, q^{(s)}_l / \pi_l},
    \qquad q^{(s+1)}_k = \frac{1}{m} \sum_{i \le m} p^{(s)}_{ik}

from :math:`q^{(0)} = \pi`. Each step does not lower the batch's likelihood
:math:`\sum_i \log \sum_k p_{ik} q_k / \pi_k`, whose maximiser (over the simplex) is
the fixed point. It needs calibrated probabilities (Alexandari, Kundaje & Shrikumar,
"Maximum Likelihood with Bias-Corrected Calibration is Hard-To-Beat at Label Shift
Adaptation", ICML 2020, found it then as good as or better than BBSE) and is the primary
estimate here.

BBSE (Lipton, Wang & Smola, "Detecting and Correcting for Label Shift with Black Box
Predictors", ICML 2018): with the validation confusion matrix
:math:`C_{jk} = P_{\mathrm{val}}(\hat y = j, y = k)` and the batch's predicted-class
shares :math:`\mu_j = P_{\mathrm{batch}}(\hat y = j)`, the importance weights
:math:`w_k = q_k / p_{\mathrm{val}}(k)` solve :math:`C w = \mu`; then
:math:`q = w \odot p_{\mathrm{val}}`. Here :math:`w` is the least-squares solution,
negative weights are set to 0 and :math:`q` is renormalised (the paper's estimator needs
an invertible :math:`C`; the clipping keeps a noisy batch on the simplex). It uses hard
predictions only, so it does not need calibration, but is noisier.

The distance between two priors is the total variation
:math:`\mathrm{TV}(q, \pi) = \frac12 \sum_k |q_k - \pi_k|`, in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PriorEstimate", "bbse_priors", "confusion_joint", "em_priors", "total_variation"]

# EM stops when no prior moves more than this in one step, or after this many steps.
EM_TOLERANCE = 1e-8
EM_MAX_STEPS = 10_000


@dataclass(frozen=True)
class PriorEstimate:
    """Estimated class priors of a batch.

    Attributes:
        priors: ``(K,)`` the estimate, on the simplex.
        n_steps: EM steps taken (0 for BBSE).
        converged: EM met :data:`EM_TOLERANCE` (always True for BBSE).
    """

    priors: np.ndarray
    n_steps: int = 0
    converged: bool = True


def em_priors(
    probs: np.ndarray,
    train_priors: np.ndarray,
    *,
    tolerance: float = EM_TOLERANCE,
    max_steps: int = EM_MAX_STEPS,
) -> PriorEstimate:
    """The batch's priors by EM prior adjustment (Saerens et al. 2002, module docstring).

    Args:
        probs: ``(m, K)`` calibrated probabilities of the batch (validated by the caller).
        train_priors: ``(K,)`` the priors the probabilities are calibrated under; a class
            of prior 0 keeps prior 0.
        tolerance: stop when no prior moves more than this in a step.
        max_steps: most steps.
    """
    pi = np.asarray(train_priors, dtype=np.float64)
    ratio = np.divide(probs, pi, out=np.zeros_like(probs), where=pi > 0)
    q = pi.copy()
    for step in range(1, max_steps + 1):
        weighted = ratio * q
        total = weighted.sum(axis=1, keepdims=True)
        # An image with zero probability on every class of positive prior gives no vote.
        adjusted = np.divide(weighted, total, out=np.zeros_like(weighted), where=total > 0)
        new = adjusted.sum(axis=0)
        new = new / new.sum() if new.sum() > 0 else pi.copy()
        moved = float(np.abs(new - q).max())
        q = new
        if moved < tolerance:
            return PriorEstimate(q, step, True)
    return PriorEstimate(q, max_steps, False)


def confusion_joint(preds: np.ndarray, targets: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K, K)`` joint shares ``C[j, k] = P(pred = j, target = k)`` (rows: predictions)."""
    joint = np.zeros((n_classes, n_classes))
    np.add.at(joint, (preds, targets), 1.0)
    return joint / max(len(preds), 1)


def bbse_priors(batch_preds: np.ndarray, confusion: np.ndarray) -> PriorEstimate:
    """The batch's priors by black-box shift estimation (Lipton et al. 2018).

    Args:
        batch_preds: ``(m,)`` predicted classes of the batch.
        confusion: ``(K, K)`` validation joint confusion :func:`confusion_joint`.
    """
    k = confusion.shape[0]
    mu = np.bincount(batch_preds, minlength=k) / max(len(batch_preds), 1)
    p_val = confusion.sum(axis=0)
    w = np.linalg.lstsq(confusion, mu, rcond=None)[0]
    q = np.clip(w, 0.0, None) * p_val
    total = q.sum()
    return PriorEstimate(q / total if total > 0 else p_val.copy())


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance between two distributions on the same classes, in [0, 1]."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())
