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
