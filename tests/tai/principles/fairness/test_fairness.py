"""Fairness metrics against scikit-learn, torchmetrics, fairlearn, scipy and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fairlearn.metrics import accuracy_score_group_min, zero_one_loss_difference
from scipy.stats import bootstrap
from sklearn.metrics import classification_report, precision_score, recall_score
from torchmetrics.classification import MulticlassPrecision, MulticlassRecall

from tai.data.groups import read_group_column, representation
from tai.principles.fairness.clusters import cluster_fairness
from tai.principles.fairness.groups import group_fairness
from tai.principles.fairness.per_class import class_fairness

# Six samples, three classes: class 0 has 2 of 3 right, class 1 1 of 1, class 2 0 of 2.
SIX_PREDS = np.array([0, 0, 1, 1, 0, 1])
SIX_TARGETS = np.array([0, 0, 0, 1, 2, 2])


def _random_case(seed: int, n: int = 500, classes: int = 5):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    # Right 60% of the time, otherwise a uniform guess: every class is predicted.
    preds = np.where(rng.random(n) < 0.6, targets, rng.integers(0, classes, n))
    return preds, targets


def _strata_case():
    """Three classes of 40, 60 and 80 samples with accuracies 0.6, 0.8 and 0.9."""
    targets = np.repeat([0, 1, 2], [40, 60, 80])
    right = np.concatenate(
        [np.arange(40) < 24, np.arange(60) < 48, np.arange(80) < 72]
    )  # 24/40, 48/60, 72/80
    preds = np.where(right, targets, (targets + 1) % 3)
    return preds, targets


# --------------------------------------------------------------------- class fairness


def test_class_fairness_on_six_samples_equals_hand_computed_values():
    result = class_fairness(SIX_PREDS, SIX_TARGETS, classes=["cat", "dog", "fox"], n_resamples=50)

    assert result.recall == pytest.approx((2 / 3, 1.0, 0.0))
    # Predicted 0: samples 0, 1, 4 (2 right); predicted 1: samples 2, 3, 5 (1 right); 2: none.
    assert result.precision[:2] == pytest.approx((2 / 3, 1 / 3))
    assert math.isnan(result.precision[2])
    assert result.support == (3, 1, 2)
    assert result.worst_class == "fox"
    assert result.worst_class_accuracy == 0.0
    assert result.class_accuracy_gap == 1.0
    assert result.per_class() == {
        "class": ["cat", "dog", "fox"],
        "accuracy": list(result.recall),
        "precision": list(result.precision),
        "support": [3, 1, 2],
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_recall_and_precision_match_sklearn_and_torchmetrics(seed):
    preds, targets = _random_case(seed)
    result = class_fairness(preds, targets, classes=5, n_resamples=10)

    labels = list(range(5))
    sk_recall = recall_score(targets, preds, labels=labels, average=None)
    sk_precision = precision_score(targets, preds, labels=labels, average=None)
    tm_recall = MulticlassRecall(num_classes=5, average=None)(
        torch.as_tensor(preds), torch.as_tensor(targets)
    )
    tm_precision = MulticlassPrecision(num_classes=5, average=None)(
        torch.as_tensor(preds), torch.as_tensor(targets)
    )
    np.testing.assert_allclose(result.recall, sk_recall, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.precision, sk_precision, rtol=0, atol=1e-9)
    # torchmetrics computes in float32.
    np.testing.assert_allclose(result.recall, tm_recall.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.precision, tm_precision.numpy(), rtol=0, atol=1e-6)
    assert result.worst_class_accuracy == pytest.approx(sk_recall.min(), abs=1e-9)
    assert result.class_accuracy_gap == pytest.approx(sk_recall.max() - sk_recall.min(), abs=1e-9)


def test_per_class_table_matches_sklearn_classification_report():
    preds, targets = _random_case(seed=4, classes=3)
    names = ["a", "b", "c"]
    report = classification_report(
        targets, preds, labels=[0, 1, 2], target_names=names, output_dict=True
    )
    result = class_fairness(preds, targets, classes=names, n_resamples=10)
    assert class_fairness(preds, targets, classes=np.array(names), n_resamples=10) == result
    table = result.per_class()

    for name, recall, precision, support in zip(
        table["class"], table["accuracy"], table["precision"], table["support"], strict=True
    ):
        assert recall == pytest.approx(report[name]["recall"], abs=1e-9)
        assert precision == pytest.approx(report[name]["precision"], abs=1e-9)
        assert support == report[name]["support"]


def test_scores_tensors_and_index_arrays_give_the_same_result():
    preds, targets = _random_case(seed=5, n=60, classes=3)
    scores = np.eye(3)[preds] * 0.8 + 0.1  # arg-max is the prediction

    from_indices = class_fairness(preds, targets, n_resamples=100, seed=3)
    from_scores = class_fairness(
        torch.tensor(scores), torch.tensor(targets), n_resamples=100, seed=3
    )
    from_lists = class_fairness(preds.tolist(), targets.tolist(), n_resamples=100, seed=3)

    assert from_scores == from_indices
    assert from_lists == from_indices


def test_class_fairness_as_dict_has_the_gate_keys():
    result = class_fairness(SIX_PREDS, SIX_TARGETS, n_resamples=20)
    assert list(result.as_dict()) == [
        "worst_class_accuracy",
        "worst_class_accuracy_lower",
        "worst_class_accuracy_upper",
        "class_accuracy_gap",
        "class_accuracy_gap_lower",
        "class_accuracy_gap_upper",
    ]
    assert all(isinstance(v, float) for v in result.as_dict().values())


def test_class_without_samples_is_nan_and_left_out_of_worst_and_gap():
    preds = np.array([0, 0, 1, 1, 0])
    targets = np.array([0, 0, 1, 1, 1])  # class 2 has no samples but is predicted never

    result = class_fairness(preds, targets, classes=["a", "b", "c"], n_resamples=50)

    assert math.isnan(result.recall[2])
    assert result.absent_classes == ("c",)
    assert result.worst_class == "b"
    assert result.worst_class_accuracy == pytest.approx(2 / 3)
    assert result.class_accuracy_gap == pytest.approx(1 / 3)


# --------------------------------------------------------------------- bootstrap


def test_perfect_classifier_has_degenerate_intervals():
    targets = np.repeat([0, 1, 2], 10)
    result = class_fairness(targets, targets, n_resamples=200)
    assert (result.worst_class_accuracy_lower, result.worst_class_accuracy_upper) == (1.0, 1.0)
    assert (result.class_accuracy_gap_lower, result.class_accuracy_gap_upper) == (0.0, 0.0)


def test_bootstrap_is_seeded():
    preds, targets = _strata_case()
    first = class_fairness(preds, targets, seed=7)
    assert class_fairness(preds, targets, seed=7) == first
    # Few resamples, so the interpolated quantiles move with the draws.
    bounds = {
        tuple(class_fairness(preds, targets, n_resamples=30, seed=s).as_dict().values())
        for s in range(5)
    }
    assert len(bounds) > 1


@pytest.mark.parametrize(
    ("key", "statistic"),
    [
        ("worst_class_accuracy", lambda means: np.min(means, axis=0)),
        ("class_accuracy_gap", lambda means: np.ptp(means, axis=0)),
    ],
)
def test_stratified_bootstrap_interval_matches_scipy(key, statistic):
    preds, targets = _strata_case()
    correct = (preds == targets).astype(float)
    strata = [correct[targets == k] for k in range(3)]

    def stat(*samples, axis):
        return statistic(np.stack([s.mean(axis=axis) for s in samples]))

    # Several samples and paired=False: scipy resamples each class on its own, i.e. a
    # stratified bootstrap. Different random streams: equal up to Monte Carlo error.
    reference = bootstrap(
        strata,
        stat,
        n_resamples=4000,
        vectorized=True,
        method="percentile",
        confidence_level=0.9,
        rng=np.random.default_rng(1),
    ).confidence_interval
    result = class_fairness(preds, targets, n_resamples=4000, confidence=0.9, seed=0).as_dict()

    assert result[f"{key}_lower"] == pytest.approx(reference.low, abs=0.02)
    assert result[f"{key}_upper"] == pytest.approx(reference.high, abs=0.02)


def test_narrower_confidence_gives_a_nested_interval():
    preds, targets = _strata_case()
    wide = class_fairness(preds, targets, confidence=0.99, seed=2)
    narrow = class_fairness(preds, targets, confidence=0.5, seed=2)
    assert wide.worst_class_accuracy_lower <= narrow.worst_class_accuracy_lower
    assert narrow.worst_class_accuracy_upper <= wide.worst_class_accuracy_upper
    assert narrow.worst_class_accuracy_lower < narrow.worst_class_accuracy_upper


# --------------------------------------------------------------------- class input errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_resamples": 0}, "n_resamples"),
        ({"n_resamples": True}, "n_resamples"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": float("nan")}, "confidence"),
        ({"seed": 1.5}, "seed"),
        ({"classes": 0}, "classes"),
        ({"classes": ["a", "a", "b"]}, "distinct class names"),
        ({"classes": 2}, r"targets in \[0, 2\)"),
    ],
)
def test_class_fairness_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        class_fairness(SIX_PREDS, SIX_TARGETS, **kwargs)


def test_class_fairness_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same number of samples, but got 6 and 5"):
        class_fairness(SIX_PREDS, SIX_TARGETS[:5])
    with pytest.raises(ValueError, match="at least one sample"):
        class_fairness([], [])
    with pytest.raises(ValueError, match=r"shape \(N, C\) \(float scores\) or \(N,\)"):
        class_fairness(np.array([0.2, 0.8]), np.array([0, 1]))
    with pytest.raises(ValueError, match="not one-hot"):
        class_fairness(np.array([0, 1]), np.eye(2, dtype=int))
    with pytest.raises(
        ValueError, match="3 score columns for the 3 classes, but the predictions have 2"
    ):
        class_fairness(np.full((2, 2), 0.5), np.array([0, 1]), classes=3)
    with pytest.raises(ValueError, match="finite"):
        class_fairness(np.array([[np.nan, 1.0]]), np.array([0]))


# --------------------------------------------------------------------- group fairness

# Groups x: 2 of 2 right, y: 1 of 3 right, z: 2 of 4 right.
GROUP_PREDS = np.array([0, 1, 1, 0, 1, 0, 1, 1, 1])
GROUP_TARGETS = np.array([0, 1, 0, 0, 0, 0, 1, 0, 0])
GROUPS = ["x", "x", "y", "y", "y", "z", "z", "z", "z"]


def test_group_fairness_on_nine_samples_equals_hand_computed_values():
    result = group_fairness(GROUP_PREDS, GROUP_TARGETS, GROUPS, column="site", n_resamples=50)

    assert result.column == "site"
    assert result.per_group() == {
        "group": ["x", "y", "z"],
        "accuracy": pytest.approx([1.0, 1 / 3, 1 / 2]),
        "error_rate": pytest.approx([0.0, 2 / 3, 1 / 2]),
        "count": [2, 3, 4],
    }
    assert result.worst_group == "y"
    assert result.worst_group_accuracy == pytest.approx(1 / 3)
    assert result.group_error_rate_gap == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_group_fairness_matches_fairlearn_derived_metrics_and_numpy(seed):
    preds, targets = _random_case(seed, n=400, classes=4)
    groups = np.random.default_rng(seed + 10).choice(["a", "b", "c", "d"], size=400).tolist()

    result = group_fairness(preds, targets, groups, column="sex", n_resamples=20)

    expected_min = accuracy_score_group_min(targets, preds, sensitive_features=groups)
    expected_gap = zero_one_loss_difference(targets, preds, sensitive_features=groups)
    assert result.worst_group_accuracy == pytest.approx(expected_min, abs=1e-12)
    assert result.group_error_rate_gap == pytest.approx(expected_gap, abs=1e-12)
    group_array = np.asarray(groups)
    by_hand = [np.mean(preds[group_array == g] == targets[group_array == g]) for g in "abcd"]
    np.testing.assert_allclose(result.accuracy, by_hand, rtol=0, atol=1e-12)
    assert result.count == tuple(int((group_array == g).sum()) for g in "abcd")
    assert result.group_error_rate_gap == pytest.approx(max(by_hand) - min(by_hand), abs=1e-12)


def test_group_intervals_are_seeded_and_degenerate_for_a_perfect_model():
    targets = np.array([0, 1] * 10)
    perfect = group_fairness(targets, targets, ["a", "b"] * 10, column="site", n_resamples=100)
    assert perfect.as_dict() == {
        "worst_group_accuracy": 1.0,
        "worst_group_accuracy_lower": 1.0,
        "worst_group_accuracy_upper": 1.0,
        "group_error_rate_gap": 0.0,
        "group_error_rate_gap_lower": 0.0,
        "group_error_rate_gap_upper": 0.0,
    }
    preds, targets = _random_case(seed=3, n=300, classes=3)
    groups = ["a", "b", "c"] * 100
    first = group_fairness(preds, targets, groups, column="site", seed=4)
    assert group_fairness(preds, targets, groups, column="site", seed=4) == first
    assert first.worst_group_accuracy_lower < first.worst_group_accuracy_upper


def test_declared_group_without_samples_is_an_error_naming_group_and_column():
    with pytest.raises(ValueError, match=r"Group 'w' of column 'site' has no samples"):
        group_fairness(
            GROUP_PREDS, GROUP_TARGETS, GROUPS, column="site", expected_groups=["w", "x", "y", "z"]
        )
    with pytest.raises(ValueError, match=r"Group 'z' of column 'site' is not among"):
        group_fairness(
            GROUP_PREDS, GROUP_TARGETS, GROUPS, column="site", expected_groups=["x", "y"]
        )


def test_group_with_fewer_than_min_samples_is_an_error():
    with pytest.raises(
        ValueError, match=r"Group 'x' \(2\), 'y' \(3\) of column 'site'.*min_samples"
    ):
        group_fairness(GROUP_PREDS, GROUP_TARGETS, GROUPS, column="site", min_samples=4)
    # At the threshold every group passes.
    group_fairness(GROUP_PREDS, GROUP_TARGETS, GROUPS, column="site", min_samples=2, n_resamples=5)


def test_group_fairness_rejects_bad_inputs():
    with pytest.raises(ValueError, match="9 samples"):
        group_fairness(GROUP_PREDS, GROUP_TARGETS, GROUPS[:-1], column="site")
    with pytest.raises(ValueError, match="same number of samples"):
        group_fairness(GROUP_PREDS, GROUP_TARGETS[:-1], GROUPS, column="site")
    with pytest.raises(ValueError, match="to be strings, but got 1"):
        group_fairness(GROUP_PREDS, GROUP_TARGETS, [1] * 9, column="site")
    with pytest.raises(ValueError, match="column"):
        group_fairness(GROUP_PREDS, GROUP_TARGETS, GROUPS, column="")
    with pytest.raises(ValueError, match="min_samples"):
        group_fairness(GROUP_PREDS, GROUP_TARGETS, GROUPS, column="site", min_samples=0)


# --------------------------------------------------------------------- read_group_column


@pytest.fixture
def metadata_csv(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text(
        "path,label,split,site\n"
        "test/3/17.png,3,test,hospital_a\n"
        "test/5/2.png,5,test, hospital_b \n"
        "train/3/1.png,3,train,hospital_a\n",
        encoding="utf-8",
    )
    return path


def test_read_group_column_returns_groups_in_the_order_asked(metadata_csv):
    ids = ["test/5/2.png", "./test/3/17.png", "test\\5\\2.png"]
    assert read_group_column(metadata_csv, "site", ids) == [
        "hospital_b",
        "hospital_a",
        "hospital_b",
    ]


def test_read_groups_feed_group_fairness(metadata_csv):
    groups = read_group_column(metadata_csv, "site", ["test/3/17.png", "test/5/2.png"])
    result = group_fairness([3, 0], [3, 5], groups, column="site", n_resamples=10)
    assert result.per_group()["accuracy"] == [1.0, 0.0]
    assert result.worst_group == "hospital_b"


def test_unknown_column_is_named_with_the_available_ones(metadata_csv):
    with pytest.raises(
        ValueError,
        match=r"Group column 'sex' does not exist.*\['path', 'label', 'split', 'site'\]",
    ):
        read_group_column(metadata_csv, "sex", ["test/3/17.png"])


def test_sample_missing_from_the_csv_is_named(metadata_csv):
    with pytest.raises(ValueError, match=r"Sample 'test/1/9.png' is missing .* \(1 of 2 samples\)"):
        read_group_column(metadata_csv, "site", ["test/3/17.png", "test/1/9.png"])


def test_malformed_metadata_files_are_rejected(tmp_path):
    no_path = tmp_path / "a.csv"
    no_path.write_text("file,site\nx.png,a\n")
    with pytest.raises(ValueError, match="Expected a 'path' column"):
        read_group_column(no_path, "site", ["x.png"])

    twice = tmp_path / "b.csv"
    twice.write_text("path,site\nx.png,a\n./x.png,b\n")
    with pytest.raises(ValueError, match=r"Path 'x.png' occurs more than once .* line 3"):
        read_group_column(twice, "site", ["x.png"])

    blank = tmp_path / "c.csv"
    blank.write_text("path,site\nx.png,\n")
    with pytest.raises(ValueError, match="Sample 'x.png' has no value in column 'site'"):
        read_group_column(blank, "site", ["x.png"])

    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_group_column(tmp_path / "missing.csv", "site", ["x.png"])


# --------------------------------------------------------------------- cluster fairness


def _blobs_case(seed: int = 0):
    """Class 0: three blobs of 20, 15 and 10 samples, the 10 always misclassified;
    class 1: two blobs of 20, always right."""
    rng = np.random.default_rng(seed)
    centres = {0: [(0, 0), (10, 0), (0, 10)], 1: [(30, 30), (40, 30)]}
    sizes = {0: [20, 15, 10], 1: [20, 20]}
    embeddings, targets, blob = [], [], []
    for k in (0, 1):
        for b, (centre, size) in enumerate(zip(centres[k], sizes[k], strict=True)):
            embeddings.append(rng.normal(centre, 0.5, size=(size, 2)))
            targets += [k] * size
            blob += [(k, b)] * size
    targets = np.array(targets)
    failing = np.array([b == (0, 2) for b in blob])
    preds = np.where(failing, 1 - targets, targets)
    order = rng.permutation(targets.size)  # clusters must not depend on sample order
    return np.concatenate(embeddings)[order], preds[order], targets[order], failing[order]


def test_cluster_fairness_finds_the_always_misclassified_cluster():
    embeddings, preds, targets, failing = _blobs_case()

    result = cluster_fairness(embeddings, preds, targets, classes=["a", "b"], seed=0)

    assert result.worst_cluster_accuracy == 0.0
    assert (result.worst_cluster_class, result.worst_cluster_index) == ("a", 2)
    assert result.worst_cluster_size == 10
    assert result.cluster_accuracy_gap == 1.0
    members = (targets == 0) & (np.array(result.assignments) == result.worst_cluster_index)
    np.testing.assert_array_equal(members, failing)
    assert result.per_cluster() == {
        "class": ["a", "a", "a", "b", "b", "b"],
        "cluster": [0, 1, 2, 0, 1, 2],
        "size": [20, 15, 10, *result.cluster_size[3:]],
        "accuracy": [1.0, 1.0, 0.0, 1.0, 1.0, 1.0],
    }
    assert sum(result.cluster_size[3:]) == 40
    assert result.as_dict() == {
        "worst_cluster_accuracy": 0.0,
        "worst_cluster_size": 10.0,
        "cluster_accuracy_gap": 1.0,
    }


def test_cluster_accuracies_match_the_assignments_and_are_seeded():
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(90, 4)).astype(np.float32)
    preds, targets = _random_case(seed=3, n=90, classes=3)

    result = cluster_fairness(embeddings, preds, targets, clusters_per_class=4, seed=1)

    assignments = np.array(result.assignments)
    for k, j, size, acc in zip(
        result.cluster_class,
        result.cluster_index,
        result.cluster_size,
        result.cluster_accuracy,
        strict=True,
    ):
        mask = (targets == int(k)) & (assignments == j)
        assert size == mask.sum()
        assert acc == pytest.approx(np.mean(preds[mask] == targets[mask]))
    assert result.worst_cluster_accuracy == min(result.cluster_accuracy)
    gaps = [
        max(a for c, a in zip(result.cluster_class, result.cluster_accuracy, strict=True) if c == k)
        - min(
            a for c, a in zip(result.cluster_class, result.cluster_accuracy, strict=True) if c == k
        )
        for k in ("0", "1", "2")
    ]
    assert result.cluster_accuracy_gap == pytest.approx(max(gaps))
    assert cluster_fairness(embeddings, preds, targets, clusters_per_class=4, seed=1) == result


def test_small_classes_get_fewer_clusters():
    embeddings = np.array([[0.0, 0.0], [5.0, 5.0], [1.0, 1.0], [1.0, 1.0], [9.0, 0.0]])
    targets = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 2])

    result = cluster_fairness(embeddings, preds, targets, clusters_per_class=3)

    # Class 0: two samples, two clusters; class 1: two identical samples, one; class 2: one.
    assert result.cluster_class == ("0", "0", "1", "2")
    assert result.cluster_size == (1, 1, 2, 1)
    assert result.worst_cluster_accuracy == 0.0
    assert result.worst_cluster_size == 1
    assert result.cluster_accuracy_gap == 1.0


def test_cluster_fairness_rejects_bad_inputs():
    embeddings, preds, targets, _ = _blobs_case()
    with pytest.raises(ValueError, match="clusters_per_class"):
        cluster_fairness(embeddings, preds, targets, clusters_per_class=0)
    with pytest.raises(ValueError, match=r"shape \(N, D\) with N = 85"):
        cluster_fairness(embeddings[:-1], preds, targets)
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        cluster_fairness(embeddings[:, 0], preds, targets)
    bad = embeddings.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="finite numeric"):
        cluster_fairness(bad, preds, targets)
    with pytest.raises(ValueError, match="seed"):
        cluster_fairness(embeddings, preds, targets, seed="0")


# --------------------------------------------------------------------- representation


def test_representation_on_a_small_dataset_equals_hand_computed_values():
    labels = {
        "train": ["cat", "cat", "cat", "dog", "cat", "dog"],  # cat 4, dog 2
        "test": ["cat", "dog", "dog", "dog"],  # cat 1, dog 3
    }
    groups = {
        "train": ["a", "a", "b", "a", "a", "b"],  # a 4, b 2
        "test": ["a", "a", "a", "a"],  # a 4, b 0
    }

    rep = representation(labels, groups)

    assert rep.splits == ("train", "test")
    assert rep.classes == ("cat", "dog")
    assert rep.groups == ("a", "b")
    assert rep.class_counts == {"train": {"cat": 4, "dog": 2}, "test": {"cat": 1, "dog": 3}}
    assert rep.class_shares == {
        "train": {"cat": 4 / 6, "dog": 2 / 6},
        "test": {"cat": 0.25, "dog": 0.75},
    }
    assert rep.group_counts == {"train": {"a": 4, "b": 2}, "test": {"a": 4, "b": 0}}
    assert rep.group_shares["test"] == {"a": 1.0, "b": 0.0}
    assert rep.class_group_counts["train"] == {"cat": {"a": 3, "b": 1}, "dog": {"a": 1, "b": 1}}
    assert rep.class_group_counts["test"] == {"cat": {"a": 1, "b": 0}, "dog": {"a": 3, "b": 0}}
    assert rep.class_group_shares["train"]["cat"] == {"a": 0.5, "b": 1 / 6}
    assert rep.as_dict() == {
        "min_class_share": 0.25,
        "max_class_imbalance_ratio": 2.0,
        "min_group_share": 0.0,
    }


def test_class_missing_from_a_split_has_share_zero_and_infinite_imbalance():
    rep = representation({"train": ["a", "a", "b"], "val": ["c"]})
    assert rep.class_counts["train"] == {"a": 2, "b": 1, "c": 0}
    assert rep.min_class_share == 0.0
    assert rep.max_class_imbalance_ratio == math.inf
    assert rep.min_group_share is None
    assert "min_group_share" not in rep.as_dict()
    assert rep.group_counts == {} and rep.class_group_counts == {}


def test_imbalance_ratio_uses_the_reference_split():
    rep = representation({"train": ["a", "b"], "test": ["a"] * 5 + ["b"]}, reference_split="test")
    assert rep.max_class_imbalance_ratio == 5.0


def test_representation_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"reference split 'train'.*\['test'\]"):
        representation({"test": ["a"]})
    with pytest.raises(ValueError, match="Split 'val' has no samples"):
        representation({"train": ["a"], "val": []})
    with pytest.raises(ValueError, match="splits \\['train'\\]"):
        representation({"train": ["a"]}, {"test": ["x"]})
    with pytest.raises(ValueError, match="one group per sample of split 'train'"):
        representation({"train": ["a", "b"]}, {"train": ["x"]})
    with pytest.raises(ValueError, match="class labels of split 'train' to be strings"):
        representation({"train": [0, 1]})
    with pytest.raises(ValueError, match="labels_by_split"):
        representation({})


# --------------------------------------------------------------------- pinned details


def test_class_fairness_defaults_are_1000_resamples_95_percent_and_seed_0():
    preds, targets = _random_case(3, n=120, classes=3)
    default = class_fairness(preds, targets)
    assert (default.n_resamples, default.confidence) == (1000, 0.95)
    assert isinstance(default.confidence, float)
    assert default == class_fairness(preds, targets, n_resamples=1000, confidence=0.95, seed=0)
    assert default != class_fairness(preds, targets, seed=1)


def test_precision_of_a_class_predicted_once_is_its_one_hit_or_miss():
    # Class 2 is predicted once (right), class 1 once (wrong), class 0 four times (3 right).
    preds = np.array([0, 0, 0, 0, 1, 2])
    targets = np.array([0, 0, 0, 1, 2, 2])
    result = class_fairness(preds, targets, n_resamples=5)
    assert result.precision == pytest.approx((3 / 4, 0.0, 1.0))
    assert result.recall == pytest.approx((1.0, 0.0, 1 / 2))


def test_a_class_without_samples_or_predictions_warns_nothing():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's 0/0 RuntimeWarning would fail the test
        result = class_fairness(SIX_PREDS, SIX_TARGETS, classes=4, n_resamples=5)
    assert math.isnan(result.recall[3]) and math.isnan(result.precision[3])
    assert math.isnan(result.precision[2])  # class 2 is never predicted
    assert result.absent_classes == ("3",)


def test_group_fairness_defaults_are_1000_resamples_95_percent_and_seed_0():
    default = group_fairness(GROUP_PREDS, GROUP_TARGETS, GROUPS, column="site")
    assert (default.n_resamples, default.confidence) == (1000, 0.95)
    assert isinstance(default.confidence, float)
    explicit = group_fairness(
        GROUP_PREDS,
        GROUP_TARGETS,
        GROUPS,
        column="site",
        n_resamples=1000,
        confidence=0.95,
        seed=0,
        min_samples=1,
    )
    assert default == explicit
    preds, targets = _random_case(4, n=300, classes=3)
    groups = ["a", "b", "c"] * 100
    assert group_fairness(preds, targets, groups, column="site") != group_fairness(
        preds, targets, groups, column="site", seed=1
    )
    assert all(type(c) is int for c in default.count)
    assert all(type(a) is float for a in default.accuracy)


@pytest.mark.parametrize("bad", [True, 1.5, 0, -2, "3"])
def test_min_samples_must_be_an_integer_of_at_least_one(bad):
    with pytest.raises(ValueError) as refused:
        group_fairness(GROUP_PREDS, GROUP_TARGETS, GROUPS, column="site", min_samples=bad)
    assert str(refused.value) == (
        f"Expected argument `min_samples` to be an integer >= 1, but got {bad!r}."
    )


def test_group_errors_say_what_to_do_in_full():
    def message(**kwargs) -> str:
        args = {"preds": GROUP_PREDS, "targets": GROUP_TARGETS, "groups": GROUPS}
        args.update(kwargs)
        with pytest.raises(ValueError) as refused:
            group_fairness(args.pop("preds"), args.pop("targets"), args.pop("groups"), **args)
        return str(refused.value)

    assert message(groups=GROUPS[:-1], column="site") == (
        "Expected one group of column 'site' per sample, but got 8 groups for 9 samples. Read "
        "the groups for the same samples, in the same order, as the predictions."
    )
    assert message(column="site", expected_groups=["w", "x", "y", "z"]) == (
        "Group 'w' of column 'site' has no samples in the evaluated split (groups present: "
        "'x', 'y', 'z'). Evaluate on a split that holds every group, or leave the group out "
        "of `expected_groups`."
    )
    assert message(column="site", expected_groups=["x", "y"]) == (
        "Group 'z' of column 'site' is not among the expected groups 'x', 'y'. Fix the value "
        "in metadata.csv or add the group to `expected_groups`."
    )
    assert message(column="site", min_samples=3) == (
        "Group 'x' (2) of column 'site' has fewer than min_samples = 3 samples. Evaluate on "
        "more data, merge small groups in metadata.csv, or lower `min_samples`."
    )
    assert message(groups=[1] * 9, column="site").startswith(
        "Expected the groups of column 'site' to be strings"
    )
    assert message(column="site", expected_groups=[1, 2]).startswith(
        "Expected the expected groups of column 'site' to be strings"
    )


def _blob(x: float, y: float, n: int) -> list[tuple[float, float]]:
    """n distinct points within 0.1 of (x, y): one unmistakable k-means cluster."""
    return [(x + 0.01 * i, y + 0.02 * (i % 2)) for i in range(n)]


def test_cluster_gap_is_within_a_class_never_across_classes():
    # Class 0: blobs of 3 and 2 samples, all right; class 1: two blobs of 2, all wrong.
    # Across classes the accuracies span 0..1, within each class they are equal: gap 0.
    embeddings = np.array(_blob(0, 0, 3) + _blob(10, 10, 2) + _blob(20, 0, 2) + _blob(0, 20, 2))
    targets = np.array([0] * 5 + [1] * 4)
    preds = np.array([0] * 5 + [0] * 4)
    result = cluster_fairness(embeddings, preds, targets, clusters_per_class=2)
    assert result.cluster_accuracy_gap == 0.0
    assert result.per_cluster() == {
        "class": ["0", "0", "1", "1"],
        "cluster": [0, 1, 0, 1],
        "size": [3, 2, 2, 2],
        "accuracy": [1.0, 1.0, 0.0, 0.0],
    }
    # Equal sizes in class 1: the cluster of the first sample is cluster 0.
    assert result.assignments == (0, 0, 0, 1, 1, 0, 0, 1, 1)
    # The worst: accuracy 0 in clusters of equal size, so the first of them.
    assert (result.worst_cluster_class, result.worst_cluster_index) == ("1", 0)
    assert (result.worst_cluster_size, result.worst_cluster_accuracy) == (2, 0.0)


def test_the_worst_cluster_on_a_tie_is_the_largest_even_in_a_later_class():
    # Class 0: 4 samples at 1/4 right, 2 at 2/2; class 1: 8 at 2/8 right, 2 at 1/2.
    embeddings = np.array(_blob(0, 0, 4) + _blob(10, 10, 2) + _blob(20, 0, 8) + _blob(0, 20, 2))
    targets = np.array([0] * 6 + [1] * 10)
    right = [1, 0, 0, 0] + [1, 1] + [1, 1, 0, 0, 0, 0, 0, 0] + [1, 0]
    preds = np.where(np.array(right) == 1, targets, 1 - targets)
    result = cluster_fairness(embeddings, preds, targets, clusters_per_class=2)
    assert result.cluster_accuracy == (0.25, 1.0, 0.25, 0.5)
    assert result.cluster_size == (4, 2, 8, 2)
    assert (result.worst_cluster_class, result.worst_cluster_index) == ("1", 0)
    assert result.worst_cluster_size == 8
    assert result.as_dict() == {
        "worst_cluster_accuracy": 0.25,
        "worst_cluster_size": 8.0,
        "cluster_accuracy_gap": 0.75,
    }


def test_cluster_fairness_defaults_to_seed_0_and_one_cluster_is_allowed():
    rng = np.random.default_rng(0)
    embeddings, preds = rng.random((40, 3)), rng.integers(0, 2, 40)
    targets = np.zeros(40, dtype=int)
    default = cluster_fairness(embeddings, preds, targets, clusters_per_class=5, classes=2)
    assert default == cluster_fairness(
        embeddings, preds, targets, clusters_per_class=5, classes=2, seed=0
    )
    assert default != cluster_fairness(
        embeddings, preds, targets, clusters_per_class=5, classes=2, seed=1
    )
    one = cluster_fairness(embeddings, preds, targets, clusters_per_class=1, classes=2)
    assert one.cluster_size == (40,) and one.cluster_accuracy_gap == 0.0
    assert one.worst_cluster_accuracy == pytest.approx(float(np.mean(preds == 0)))


@pytest.mark.parametrize("bad", [0, True, 1.5, "3"])
def test_clusters_per_class_must_be_an_integer_of_at_least_one(bad):
    with pytest.raises(ValueError) as refused:
        cluster_fairness(np.zeros((2, 2)), [0, 1], [0, 1], clusters_per_class=bad)
    assert str(refused.value) == (
        f"Expected argument `clusters_per_class` to be an integer >= 1, but got {bad!r}. Pass "
        "the number of pseudo-groups per class, e.g. 3."
    )


def test_cluster_fairness_takes_scores_integer_embeddings_and_refuses_nan():
    embeddings = np.array(_blob(0, 0, 3) + _blob(10, 10, 3)) * 100
    targets = np.array([0, 0, 0, 1, 1, 1])
    scores = np.eye(3)[[0, 0, 1, 1, 1, 1]]  # class 2 exists in the scores, never in the data
    as_float = cluster_fairness(embeddings, scores, targets, clusters_per_class=2)
    as_int = cluster_fairness(embeddings.astype(np.int64), scores, targets, clusters_per_class=2)
    assert as_int == as_float
    assert as_float.cluster_class == ("0", "0", "1", "1")
    assert as_float.cluster_size == (2, 1, 2, 1)
    bad = embeddings.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError) as refused:
        cluster_fairness(bad, scores, targets)
    assert str(refused.value) == (
        "Expected finite numeric `embeddings`, but got dtype float64 or NaN/inf values. Check "
        "the feature extractor."
    )


def _refusal(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as refused:
        fn(*args, **kwargs)
    return str(refused.value)


def test_argument_messages_say_what_to_pass_in_full():
    assert _refusal(class_fairness, SIX_PREDS, SIX_TARGETS, n_resamples=0) == (
        "Expected argument `n_resamples` to be an integer >= 1, but got 0. Pass the number of "
        "bootstrap resamples, e.g. n_resamples=1000."
    )
    assert _refusal(class_fairness, SIX_PREDS, SIX_TARGETS, seed=0.5) == (
        "Expected argument `seed` to be an integer, but got 0.5. The same seed gives the same "
        "result."
    )
    assert _refusal(class_fairness, SIX_PREDS, SIX_TARGETS, classes=0) == (
        "Expected argument `classes` to be >= 1, but got 0. Pass the number of classes or "
        "their names."
    )
    assert _refusal(class_fairness, SIX_PREDS, SIX_TARGETS, classes=["a", "a", "b"]) == (
        "Expected argument `classes` to be distinct class names, but got ['a', 'a', 'b']. "
        "Pass the names in the order of the class indices."
    )
    assert _refusal(class_fairness, SIX_PREDS, SIX_TARGETS, classes=2.5) == (
        "Expected argument `classes` to be None, an integer or a sequence of names, but got 2.5."
    )
    assert _refusal(class_fairness, np.array([0, 3]), np.array([0, 1]), classes=3) == (
        "Expected predictions in [0, 3) for 3 classes, but got values in [0, 3]. Check the "
        "label mapping or `classes`."
    )
    assert _refusal(class_fairness, np.zeros((2, 2), dtype=int), np.array([0, 1])) == (
        "Expected `(N, C)` predictions to be float scores, but got dtype int64. Pass "
        "probabilities or logits, or `(N,)` class indices."
    )
    assert _refusal(class_fairness, np.zeros((2, 0)), np.array([0, 1])) == (
        "Expected `(N, C)` scores with C >= 1 and finite values, but got shape (2, 0) or "
        "NaN/inf. Check the model output."
    )
    assert _refusal(class_fairness, np.zeros((2, 2, 2)), np.array([0, 1])) == (
        "Expected predictions of shape (N, C) (float scores) or (N,) (integer class indices), "
        "but got shape (2, 2, 2) and dtype float64. Pass logits.softmax(dim=1), the logits, "
        "or logits.argmax(dim=1)."
    )
    assert _refusal(class_fairness, np.array([], dtype=int), np.array([], dtype=int)) == (
        "Expected at least one sample, but got none (N = 0). Fairness is undefined without "
        "predictions; check the data loader."
    )


def test_the_smallest_allowed_arguments_work():
    # One resample, one class, one score column: all allowed.
    one = class_fairness(np.ones((3, 1)), np.array([0, 0, 0]), n_resamples=1, classes=1)
    assert one.classes == ("0",) and one.worst_class_accuracy == 1.0
    assert one.n_resamples == 1
    assert class_fairness(SIX_PREDS, SIX_TARGETS, classes=3).classes == ("0", "1", "2")
    assert (
        group_fairness(GROUP_PREDS, GROUP_TARGETS, GROUPS, column="s", n_resamples=1).n_resamples
        == 1
    )


def test_each_class_is_clustered_by_k_means_with_ten_initialisations():
    """GEORGE's step as documented: scikit-learn's KMeans(n_init=10, random_state=seed) on
    each class's embeddings, clusters renumbered by decreasing size (ties: first sample)."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    embeddings = rng.random((30, 2))  # no clear clusters: the initialisations matter
    targets = np.zeros(30, dtype=int)
    result = cluster_fairness(embeddings, targets, targets, clusters_per_class=4, seed=0)
    labels = KMeans(n_clusters=4, n_init=10, random_state=0).fit_predict(embeddings)
    sizes = np.bincount(labels, minlength=4)
    first = [int(np.flatnonzero(labels == j)[0]) for j in range(4)]
    order = sorted(range(4), key=lambda j: (-sizes[j], first[j]))
    renumber = {j: rank for rank, j in enumerate(order)}
    assert result.assignments == tuple(renumber[int(j)] for j in labels)
    assert result.cluster_size == tuple(int(sizes[j]) for j in order)
