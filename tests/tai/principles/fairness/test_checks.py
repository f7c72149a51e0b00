"""The fairness checks of the evaluation: the metrics they declare, the values, bounds and
report sections they return (the library functions' on the same inputs, with the seed
drawn from the check's generator), and the group check without a group column."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tai.check import EvalContext, MetricSpec, Principle
from tai.principles.fairness.checks import (
    ClassFairnessCheck,
    ClusterFairnessCheck,
    GroupFairnessCheck,
)
from tai.principles.fairness.clusters import cluster_fairness
from tai.principles.fairness.groups import group_fairness
from tai.principles.fairness.per_class import class_fairness

N_RESAMPLES = 200


def _context(groups=None, *, confidence: float = 0.9) -> EvalContext:
    g = torch.Generator().manual_seed(11)
    targets = torch.arange(60) % 3
    logits = torch.randn(60, 3, generator=g)
    logits[torch.arange(60), targets] += 1.0  # right about two times in three
    return EvalContext(
        model=torch.nn.Identity(),
        classes=["cat", "dog", "owl"],
        targets=targets,
        probs=logits.softmax(1),
        embeddings=torch.randn(60, 4, generator=g),
        load_images=lambda index: torch.zeros(len(index), 1, 2, 2),
        groups=groups,
        group_column="site" if groups is not None else "",
        expected_groups=["a", "b", "c"] if groups is not None else None,
        confidence=confidence,
        n_resamples=N_RESAMPLES,
    )


def _generator(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _expected_seed(seed: int = 5) -> int:
    """The seed a check passes on: one draw in [0, 2**31 - 1) of its generator."""
    return int(torch.randint(2**31 - 1, (1,), generator=_generator(seed)))


def _spec(name, higher, description, unit="fraction", bounded=False) -> MetricSpec:
    return MetricSpec(name, higher, description, unit, bounded=bounded)


def _with_bounds(name: str, higher: bool, description: str) -> list[MetricSpec]:
    return [
        _spec(name, higher, description, bounded=True),
        _spec(f"{name}_lower", higher, f"lower bound of {name}'s interval"),
        _spec(f"{name}_upper", higher, f"upper bound of {name}'s interval"),
    ]


def test_the_checks_declare_their_metrics_with_direction_unit_and_interval():
    assert list(ClassFairnessCheck().metric_specs()) == [
        *_with_bounds("worst_class_accuracy", True, "accuracy of the worst class"),
        *_with_bounds("class_accuracy_gap", False, "best minus worst class accuracy"),
    ]
    assert list(GroupFairnessCheck().metric_specs()) == [
        *_with_bounds("worst_group_accuracy", True, "accuracy of the worst group"),
        *_with_bounds("group_error_rate_gap", False, "largest minus smallest group error rate"),
    ]
    assert list(ClusterFairnessCheck().metric_specs()) == [
        _spec("worst_cluster_accuracy", True, "accuracy of the worst cluster"),
        _spec("worst_cluster_size", None, "images in the worst cluster", "count"),
        _spec("cluster_accuracy_gap", False, "best minus worst cluster accuracy"),
    ]
    for check, name, title in (
        (ClassFairnessCheck(), "class_fairness", "Fairness across classes"),
        (GroupFairnessCheck(), "group_fairness", "Fairness across groups"),
        (ClusterFairnessCheck(), "cluster_fairness", "Fairness across clusters"),
    ):
        assert (check.name, check.principle, check.title) == (name, Principle.FAIRNESS, title)


def test_the_seed_is_drawn_from_the_checks_generator():
    from tai.principles.fairness.checks import _seed

    g = _generator(5)
    assert _seed(g) == _expected_seed(5)
    assert _seed(g) == int(torch.randint(2**31 - 1, (2,), generator=_generator(5))[1])


def test_class_fairness_check_reports_class_fairness_with_its_intervals():
    ctx = _context()
    result = ClassFairnessCheck().run(ctx, _generator())
    expected = class_fairness(
        ctx.probs,
        ctx.targets,
        classes=["cat", "dog", "owl"],
        n_resamples=N_RESAMPLES,
        confidence=0.9,
        seed=_expected_seed(),
    )
    assert result.check == "class_fairness"
    assert result.values == expected.as_dict()
    assert result.detail == expected
    assert result.bounds == {
        "worst_class_accuracy": (
            expected.worst_class_accuracy_lower,
            expected.worst_class_accuracy_upper,
        ),
        "class_accuracy_gap": (
            expected.class_accuracy_gap_lower,
            expected.class_accuracy_gap_upper,
        ),
    }
    assert result.section == {
        "fairness": {
            "confidence": 0.9,
            "per_class": expected.per_class(),
            "worst_class": expected.worst_class,
        }
    }
    assert result.skipped == {}
    # The bounds differ from the estimate: the interval is the bootstrap's, not a copy.
    lower, upper = result.bounds["worst_class_accuracy"]
    assert lower < upper


def test_another_seed_gives_other_bootstrap_bounds():
    ctx = _context()
    one = ClassFairnessCheck().run(ctx, _generator(5))
    other = ClassFairnessCheck().run(ctx, _generator(6))
    assert one.values["worst_class_accuracy"] == other.values["worst_class_accuracy"]
    assert one.bounds != other.bounds


def test_group_fairness_without_a_group_column_is_not_applicable():
    result = GroupFairnessCheck().run(_context(groups=None), _generator())
    names = [
        "worst_group_accuracy",
        "worst_group_accuracy_lower",
        "worst_group_accuracy_upper",
        "group_error_rate_gap",
        "group_error_rate_gap_lower",
        "group_error_rate_gap_upper",
    ]
    assert list(result.values) == names
    assert all(math.isnan(v) for v in result.values.values())
    assert result.skipped == dict.fromkeys(names, "no group column (TAI_GROUP_COLUMN)")
    assert result.section == {"fairness": {}}
    assert result.bounds == {}


def test_group_fairness_check_reports_group_fairness_of_the_predictions():
    groups = [("a", "b", "c")[i % 3] if i < 30 else "a" for i in range(60)]
    ctx = _context(groups=groups)
    result = GroupFairnessCheck().run(ctx, _generator())
    expected = group_fairness(
        ctx.probs.argmax(1),
        ctx.targets,
        groups,
        column="site",
        expected_groups=["a", "b", "c"],
        n_resamples=N_RESAMPLES,
        confidence=0.9,
        seed=_expected_seed(),
    )
    assert result.values == expected.as_dict()
    assert result.detail == expected
    assert result.bounds == {
        "worst_group_accuracy": (
            expected.worst_group_accuracy_lower,
            expected.worst_group_accuracy_upper,
        ),
        "group_error_rate_gap": (
            expected.group_error_rate_gap_lower,
            expected.group_error_rate_gap_upper,
        ),
    }
    assert result.section == {"fairness": {"groups": {"column": "site", **expected.per_group()}}}
    assert result.section["fairness"]["groups"]["column"] == "site"


@pytest.mark.parametrize("k", [None, 2])
def test_cluster_fairness_check_clusters_each_class_k_times(k):
    ctx = _context()
    check = ClusterFairnessCheck() if k is None else ClusterFairnessCheck(clusters_per_class=k)
    assert check.clusters_per_class == (3 if k is None else k)
    result = check.run(ctx, _generator())
    expected = cluster_fairness(
        ctx.embeddings,
        ctx.probs.argmax(1),
        ctx.targets,
        clusters_per_class=check.clusters_per_class,
        seed=_expected_seed(),
    )
    assert result.values == expected.as_dict()
    assert result.bounds == {}
    assert result.section == {"fairness": {"clusters": expected.per_cluster()}}
    table = expected.per_cluster()
    assert (
        len(set(zip(table["class"], table["cluster"], strict=True))) == 3 * check.clusters_per_class
    )
    np.testing.assert_array_equal(
        np.asarray(result.detail.per_cluster()["accuracy"]),
        np.asarray(expected.per_cluster()["accuracy"]),
    )


def test_bounds_are_given_only_for_metrics_with_both_companions():
    from tai.principles.fairness.checks import _bounds

    values = {
        "a": 0.5,
        "a_lower": 0.4,
        "a_upper": 0.6,
        "b": 0.1,
        "b_lower": 0.0,  # no b_upper
        "c": 0.2,
        "c_upper": 0.3,  # no c_lower
    }
    assert _bounds(values) == {"a": (0.4, 0.6)}


def test_group_fairness_check_passes_the_expected_groups_on():
    groups = ["a", "b"] * 30  # group "c" is expected but absent
    with pytest.raises(ValueError, match=r"Group 'c' of column 'site' has no samples"):
        GroupFairnessCheck().run(_context(groups=groups), _generator())
