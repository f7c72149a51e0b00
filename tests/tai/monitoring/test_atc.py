"""ATC against a hand-computed case and the authors' threshold search, and its behaviour
on the synthetic calibrated classifier (tests/tai/monitoring/synthetic.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy

from tai.monitoring.atc import (
    atc_accuracy,
    atc_interval,
    atc_scores,
    average_confidence,
    bootstrap_thresholds,
    class_thresholds,
    doc_accuracy,
    fit_threshold,
)
from tests.tai.monitoring.synthetic import GaussianWorld


def authors_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """``find_ATC_threshold`` of github.com/saurabhgarg1996/ATC_code (ATC_helper.py),
    re-implemented from its description: scan the scores in increasing order, moving
    one image at a time below the threshold, and keep the first score at which
    |wrong above - right at or below| is smallest (0.0 if none beats the start)."""
    order = np.argsort(scores, kind="stable")
    s, right = scores[order], labels[order]
    wrong_above, right_below = float(np.sum(~labels)), 0.0
    best, threshold = abs(wrong_above - right_below), 0.0
    for i in range(len(s)):
        if right[i]:
            right_below += 1
        else:
            wrong_above -= 1
        if abs(wrong_above - right_below) < best:
            best, threshold = abs(wrong_above - right_below), s[i]
    return float(threshold)


def authors_estimate(threshold: float, scores: np.ndarray) -> float:
    """``get_ATC_acc`` of the same file, as a share rather than a percentage."""
    return float(np.mean(scores >= threshold))


def test_a_hand_computed_case():
    # 6 validation images, 4 right: the threshold leaves exactly 4 scores above it.
    scores = np.array([0.30, 0.90, 0.50, 0.80, 0.20, 0.70])
    right = np.array([False, True, True, True, False, True])
    t = fit_threshold(scores, right)
    assert t == 0.30  # sorted: 0.2, 0.3 | 0.5, 0.7, 0.8, 0.9
    assert atc_accuracy(scores, t) == pytest.approx(4 / 6)
    # A batch: 0.95, 0.6, 0.4 above 0.3; 0.1, 0.3 not (0.3 is not above itself).
    batch = np.array([0.95, 0.6, 0.1, 0.4, 0.3])
    assert atc_accuracy(batch, t) == pytest.approx(3 / 5)
    # The authors count 0.3 too (>=): the only difference, a batch score equal to t.
    assert authors_threshold(scores, right) == t
    assert authors_estimate(t, batch) == pytest.approx(4 / 5)


@pytest.mark.parametrize("seed", range(5))
def test_the_threshold_is_the_authors_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    scores = rng.normal(size=n)
    right = rng.random(n) < rng.uniform(0.3, 0.95)
    if right.all():
        right[0] = False
    t = fit_threshold(scores, right)
    assert t == authors_threshold(scores, right)
    assert atc_accuracy(scores, t) == pytest.approx(right.mean())
    batch = rng.normal(0.3, 1.2, size=300)  # continuous: no batch score equals t
    assert atc_accuracy(batch, t) == authors_estimate(t, batch)


def test_ties_take_the_candidate_whose_count_above_is_closest():
    scores = np.array([0.1, 0.5, 0.5, 0.5, 0.9])
    right = np.array([False, False, True, True, True])  # 3 right
    # Above 0.1: 4; above 0.5: 1; above -inf: 5 -> 0.1 (|4 - 3| = 1 < |1 - 3|).
    assert fit_threshold(scores, right) == 0.1


def test_all_right_gives_the_threshold_just_below_the_lowest_score():
    """Every validation prediction right: every threshold below 0.2 fits; the largest does,
    so a batch image less confident than any validation image counts as an error."""
    scores = np.array([0.2, 0.4, 0.9])
    t = fit_threshold(scores, np.ones(3, bool))
    assert t < 0.2 and t == np.nextafter(0.2, -np.inf)
    assert atc_accuracy(scores, t) == 1.0  # on validation the share above is its accuracy
    assert atc_accuracy(np.array([0.1, 0.3]), t) == 0.5  # -inf would have said 1.0


def test_none_right_gives_the_largest_score():
    scores = np.array([0.2, 0.4, 0.9])
    assert fit_threshold(scores, np.zeros(3, bool)) == 0.9


def test_the_scores_are_negative_entropy_and_top_probability():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5) * 0.5, size=50)
    probs[0] = [1.0, 0, 0, 0, 0]  # 0 log 0 = 0
    np.testing.assert_allclose(atc_scores(probs), -entropy(probs, axis=1), atol=1e-12)
    np.testing.assert_array_equal(atc_scores(probs, "max_confidence"), probs.max(axis=1))
    with pytest.raises(ValueError, match="'entropy'.*negative_entropy"):
        atc_scores(probs, "entropy")


def test_average_confidence_and_doc_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    assert average_confidence(probs) == pytest.approx((0.9 + 0.6 + 0.7) / 3)
    # DoC = 0.8 - (0.85 - 0.7) = 0.65
    assert doc_accuracy(0.8, 0.85, 0.7) == pytest.approx(0.65)
    assert doc_accuracy(0.99, 0.5, 0.9) == 1.0  # clipped


def test_class_thresholds_reproduce_each_class_precision_on_validation():
    w = GaussianWorld.make(separation=4.0)
    val = w.sample(3000, np.random.default_rng(1))
    scores, preds = atc_scores(val.probs), val.probs.argmax(1)
    right = preds == val.targets
    t = fit_threshold(scores, right)
    per_class, support, precision = class_thresholds(
        scores, preds, right, 10, global_threshold=t, min_support=30
    )
    for k in range(10):
        member = preds == k
        assert support[k] == member.sum()
        assert precision[k] == pytest.approx(right[member].mean())
        assert atc_accuracy(scores[member], per_class[k]) == pytest.approx(precision[k])
    # A class with too few predictions falls back to the global threshold.
    fallback, *_ = class_thresholds(scores, preds, right, 10, global_threshold=t, min_support=10**6)
    assert (fallback == t).all()


def test_bootstrap_thresholds_scatter_around_the_threshold():
    w = GaussianWorld.make()
    val = w.sample(2000, np.random.default_rng(2))
    scores, right = atc_scores(val.probs), val.probs.argmax(1) == val.targets
    t = fit_threshold(scores, right)
    boot = bootstrap_thresholds(scores, right, 200, np.random.default_rng(0))
    # The threshold's quantile in its bootstrap distribution is central.
    assert 0.2 < np.mean(boot < t) < 0.8
    assert boot.std() > 0


def _errors_and_coverage(world, shift, n_batches=40, seed=0):
    rng = np.random.default_rng(seed)
    val = world.sample(4000, rng)
    scores, right = atc_scores(val.probs), val.probs.argmax(1) == val.targets
    t = fit_threshold(scores, right)
    boot = bootstrap_thresholds(scores, right, 100, rng)
    acc, conf = right.mean(), val.probs.max(1).mean()
    atc, ac, doc, covered = [], [], [], []
    for _ in range(n_batches):
        b = world.sample(500, rng, **shift)
        s, top = atc_scores(b.probs), b.probs.max(1)
        iv = atc_interval(s, top, t, boot, confidence=0.95, n_resamples=400, rng=rng)
        atc.append(abs(iv.estimate - b.accuracy))
        ac.append(abs(top.mean() - b.accuracy))
        doc.append(abs(doc_accuracy(acc, conf, top.mean()) - b.accuracy))
        covered.append(iv.lower <= b.accuracy <= iv.upper)
        assert iv.lower <= iv.estimate <= iv.upper
    return np.mean(atc), np.mean(ac), np.mean(doc), np.mean(covered)


@pytest.mark.parametrize("separation", [5.0, 7.5])  # accuracy about 0.91 and 0.99
def test_the_interval_covers_the_batch_accuracy_without_a_shift(separation):
    *_, coverage = _errors_and_coverage(GaussianWorld.make(separation=separation), {})
    assert coverage >= 0.9


def test_the_interval_covers_under_a_prior_shift():
    world = GaussianWorld.make()
    shift = {"priors": np.array([8, 1, 1, 1, 1, 1, 1, 1, 1, 4.0])}
    *_, coverage = _errors_and_coverage(world, shift)
    assert coverage >= 0.9


def test_atc_beats_average_confidence_when_contrast_drops():
    """Less contrast (class means pulled together): the calibrated model's confidence
    falls less than its accuracy; ATC's error is a fraction of AC's and DoC's."""
    atc, ac, doc, _ = _errors_and_coverage(GaussianWorld.make(), {"signal_scale": 0.7})
    assert atc <= 0.5 * ac
    assert atc <= 0.5 * doc


def test_atc_is_no_worse_than_average_confidence_under_more_noise():
    atc, ac, doc, _ = _errors_and_coverage(GaussianWorld.make(), {"noise_scale": 1.2})
    assert atc < ac and atc < doc


def test_the_interval_has_the_variance_of_atcs_error():
    """With one threshold the replicates' variance is Var(a - pi)/m + mean(pi(1-pi))/m
    (module docstring): compare the 95% interval with the normal one of that variance."""
    rng = np.random.default_rng(3)
    m = 400
    pi = rng.beta(8, 1, size=m)  # confident, as a good model
    scores = pi + rng.normal(0, 0.02, size=m)
    t = 0.85
    a = (scores > t).astype(float)
    iv = atc_interval(scores, pi, t, np.array([t]), confidence=0.95, n_resamples=40_000, rng=rng)
    sd = np.sqrt((np.var(a - pi) + np.mean(pi * (1 - pi))) / m)
    assert iv.estimate == a.mean()
    assert iv.upper - iv.lower == pytest.approx(2 * 1.96 * sd, rel=0.05)
    assert (iv.lower + iv.upper) / 2 == pytest.approx(iv.estimate, abs=0.2 * sd)
    # A plain bootstrap of the estimate alone would be narrower here.
    assert np.sqrt(np.var(a) / m) < sd
