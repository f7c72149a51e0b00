"""EM prior adjustment and BBSE against hand-computed cases, an independent maximum
likelihood fit (scipy.optimize), scikit-learn's confusion matrix and known prior shifts
of the synthetic calibrated classifier."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import softmax
from sklearn.metrics import confusion_matrix

from tai.monitoring.priors import bbse_priors, confusion_joint, em_priors, total_variation
from tests.tai.monitoring.synthetic import GaussianWorld


def test_total_variation_by_hand():
    assert total_variation([0.5, 0.5, 0.0], [0.2, 0.3, 0.5]) == pytest.approx(0.5)
    assert total_variation([0.1, 0.9], [0.1, 0.9]) == 0.0


def test_the_joint_confusion_is_scikit_learns_transposed_and_normalised():
    rng = np.random.default_rng(0)
    preds, targets = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    expected = confusion_matrix(targets, preds, labels=range(4), normalize="all").T
    np.testing.assert_allclose(confusion_joint(preds, targets, 4), expected)


def test_bbse_solves_the_linear_system_by_hand():
    # Validation: P(pred, target) with balanced classes; the classifier is 80% right.
    c = np.array([[0.4, 0.1], [0.1, 0.4]])
    # Batch with priors q = (0.8, 0.2): P(pred = 0) = 0.4 * 1.6 + 0.1 * 0.4 = 0.68.
    preds = np.array([0] * 68 + [1] * 32)
    np.testing.assert_allclose(bbse_priors(preds, c).priors, [0.8, 0.2], atol=1e-12)


def test_bbse_recovers_priors_exactly_when_the_batch_matches_the_confusion():
    rng = np.random.default_rng(1)
    k = 5
    joint = rng.dirichlet(np.ones(k)) * 0.2 + np.eye(k) * 0.16  # diagonal-heavy
    joint /= joint.sum()
    q = rng.dirichlet(np.ones(k))
    w = q / joint.sum(axis=0)
    mu = joint @ w  # batch predicted shares under q
    counts = np.round(mu * 10**6).astype(int)
    preds = np.repeat(np.arange(k), counts)
    np.testing.assert_allclose(bbse_priors(preds, joint).priors, q, atol=1e-5)


def _mle_priors(probs: np.ndarray, train: np.ndarray) -> np.ndarray:
    """The maximiser of sum_i log sum_k p_ik q_k / pi_k over the simplex, by BFGS on
    softmax parameters: an independent route to EM's fixed point."""

    def nll(z):
        q = softmax(z)
        return -np.log((probs / train) @ q).sum()

    z = minimize(nll, np.log(train), method="BFGS", options={"gtol": 1e-10}).x
    return softmax(z)


def test_em_reaches_the_maximum_likelihood_priors():
    world = GaussianWorld.make(n_classes=4, dim=6, separation=3.0)
    batch = world.sample(800, np.random.default_rng(2), priors=[0.5, 0.3, 0.15, 0.05])
    em = em_priors(batch.probs, world.priors)
    assert em.converged
    np.testing.assert_allclose(em.priors, _mle_priors(batch.probs, world.priors), atol=2e-4)
    # Its fixed point: the mean of the adjusted posteriors is the estimate itself.
    adjusted = batch.probs * em.priors / world.priors
    adjusted /= adjusted.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(adjusted.mean(axis=0), em.priors, atol=1e-6)


def test_em_with_uniform_posteriors_keeps_the_training_priors():
    probs = np.full((10, 3), 1 / 3)
    train = np.array([0.2, 0.3, 0.5])
    probs = probs * train / (probs * train).sum(axis=1, keepdims=True)  # p = prior
    np.testing.assert_allclose(em_priors(probs, train).priors, train, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_both_recover_a_known_prior_shift(seed):
    """A batch of 2,000 with Dirichlet class proportions; tolerance (total variation from
    the batch's realised shares): EM 0.03, BBSE 0.06 (measured: at most 0.015 and 0.03
    over 30 draws)."""
    rng = np.random.default_rng(seed)
    world = GaussianWorld.make()
    val = world.sample(5000, rng)
    joint = confusion_joint(val.probs.argmax(1), val.targets, 10)
    batch = world.sample(2000, rng, priors=rng.dirichlet(np.ones(10)))
    realised = np.bincount(batch.targets, minlength=10) / 2000
    assert total_variation(realised, world.priors) > 0.2  # a real shift
    em = em_priors(batch.probs, world.priors)
    assert total_variation(em.priors, realised) < 0.03
    assert total_variation(bbse_priors(batch.probs.argmax(1), joint).priors, realised) < 0.06
