"""Label-noise estimate: detection of flipped labels on separable data, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from tai.data.label_noise import LabelNoiseResult, find_label_issues, out_of_fold_probabilities

N, K, N_FLIPPED = 1000, 5, 50


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five separable 16-d Gaussian blobs: stand-ins for a model's class embeddings."""
    features, labels = make_blobs(
        n_samples=N, centers=K, n_features=16, cluster_std=2.0, random_state=seed
    )
    return features, labels


def _flip(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Give 5% of the examples another, random label; return the noisy labels and indices."""
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(labels), N_FLIPPED, replace=False))
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, K, N_FLIPPED)) % K
    return noisy, flipped


@pytest.mark.parametrize("seed", [0, 1])
def test_flipped_labels_are_found_with_precision_and_recall_at_least_one_half(seed):
    features, labels = _blobs(seed)
    noisy, flipped = _flip(labels, seed)
    result = find_label_issues(features, noisy)
    found, truth = set(result.issue_indices), set(flipped.tolist())
    precision = len(found & truth) / max(len(found), 1)
    recall = len(found & truth) / len(truth)
    assert precision >= 0.5 and recall >= 0.5, (precision, recall)
    assert result.issue_rate == pytest.approx(len(found) / N)
    assert 0.025 <= result.issue_rate <= 0.1


def test_clean_labels_give_almost_no_issues():
    features, labels = _blobs(seed=2)
    assert find_label_issues(features, labels).issue_rate < 0.01


def test_per_class_rate_is_the_flagged_fraction_of_each_given_label():
    features, labels = _blobs(seed=3)
    noisy, _ = _flip(labels, seed=3)
    result = find_label_issues(features, noisy, n_folds=3, seed=1)
    issues = np.array(result.issue_indices, dtype=int)
    assert list(result.per_class_rate) == list(range(K))
    for k, rate in result.per_class_rate.items():
        assert rate == pytest.approx(np.sum(noisy[issues] == k) / np.sum(noisy == k))
    assert result.issue_indices == sorted(result.issue_indices)
    assert all(isinstance(i, int) for i in result.issue_indices)


def test_result_is_json_ready_and_names_its_method():
    features, labels = _blobs(seed=4)
    result = find_label_issues(features, labels)
    assert isinstance(result, LabelNoiseResult)
    data = json.loads(json.dumps(result.as_dict()))
    assert set(data) == {"issue_indices", "issue_rate", "per_class_rate", "method"}
    assert "confident_learning" in result.method and "prune_by_noise_rate" in result.method


def test_out_of_fold_probabilities_are_deterministic_distributions_not_fitted_on_the_example():
    features, labels = _blobs(seed=5)
    noisy, flipped = _flip(labels, seed=5)
    probs = out_of_fold_probabilities(features, noisy, seed=7)
    assert probs.shape == (N, K)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(probs, out_of_fold_probabilities(features, noisy, seed=7))
    # Held out, a flipped example's given label gets little probability: its blob says otherwise.
    assert np.median(probs[flipped, noisy[flipped]]) < 0.1


# --------------------------------------------------------------------- invalid input

FEATURES = np.random.default_rng(0).normal(size=(20, 3))
LABELS = np.repeat([0, 1], 10)


@pytest.mark.parametrize(
    ("features", "labels", "kwargs", "message"),
    [
        pytest.param(
            FEATURES, LABELS, {"n_folds": 1}, r"`n_folds` to be an integer >= 2", id="folds"
        ),
        pytest.param(
            FEATURES, LABELS, {"n_folds": 2.0}, r"`n_folds` .* but got 2\.0", id="folds-f"
        ),
        pytest.param(FEATURES, LABELS, {"seed": "0"}, r"`seed` to be an integer", id="seed"),
        pytest.param(FEATURES[:, 0], LABELS, {}, r"shape \(N, D\), but got shape \(20,\)", id="1d"),
        pytest.param(FEATURES, LABELS[:, None], {}, r"`labels` of shape \(N,\)", id="labels-2d"),
        pytest.param(np.empty((0, 3)), np.empty(0, int), {}, "empty dataset", id="empty"),
        pytest.param(FEATURES, LABELS[:15], {}, "same number of examples.*20 and 15", id="length"),
        pytest.param(
            np.where(np.eye(20, 3, dtype=bool), np.nan, FEATURES), LABELS, {}, "NaN", id="nan"
        ),
        pytest.param(FEATURES, LABELS.astype(float), {}, "integer class indices", id="float"),
        pytest.param(FEATURES, np.zeros(20, int), {}, "K >= 2", id="one-class"),
        pytest.param(FEATURES, LABELS * 2, {}, r"counts \[10, 0, 10\]", id="gap"),
        pytest.param(FEATURES, LABELS - 1, {}, r"values in \[-1, 0\]", id="negative"),
        pytest.param(
            FEATURES, np.r_[np.zeros(17, int), np.ones(3, int)], {}, "n_folds = 5", id="few"
        ),
    ],
)
@pytest.mark.parametrize("fn", [find_label_issues, out_of_fold_probabilities])
def test_invalid_input_raises_value_error(fn, features, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fn(features, labels, **kwargs)
