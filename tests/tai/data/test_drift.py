"""Noise shift and factor drift between two data commits (tai.data.drift)."""

from __future__ import annotations

import math

import pytest
import torch

from tai.data.drift import DRIFT_METRIC_NAMES, data_drift, noise_shift


def _card(overall: float, cells: dict[str, dict[str, float]], issue_rate: float | None) -> dict:
    return {
        "noise_profile": {
            "overall_median": overall,
            "per_split_class": {
                split: {label: {"median": m, "p90": m, "mean": m} for label, m in labels.items()}
                for split, labels in cells.items()
            },
        },
        "label_noise": {"issue_rate": issue_rate},
    }


def test_noise_shift_by_hand():
    a = _card(0.010, {"train": {"0": 0.01, "1": 0.02}, "test": {"0": 0.01}}, 0.02)
    b = _card(0.035, {"train": {"0": 0.04, "1": 0.02}, "val": {"0": 0.05}}, 0.05)
    shift = noise_shift(a, b)
    assert shift.sigma_shift == pytest.approx(0.025)
    assert shift.label_issue_rate_shift == pytest.approx(0.03)
    # Only cells both cards have are compared.
    assert shift.per_split_class == {"train": {"0": pytest.approx(0.03), "1": 0.0}}


def test_noise_shift_is_absolute_and_nan_without_label_noise():
    shift = noise_shift(_card(0.05, {}, None), _card(0.02, {}, 0.1))
    assert shift.sigma_shift == pytest.approx(0.03)
    assert math.isnan(shift.label_issue_rate_shift)


def test_noise_shift_rejects_a_non_card():
    with pytest.raises(ValueError, match="card_b has no `noise_profile`"):
        noise_shift(_card(0.1, {}, None), {"summary": {}})


def _images(n: int, seed: int, *, shift: float = 0.0) -> torch.Tensor:
    """Blobs whose brightness varies along one direction; ``shift`` moves that factor."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 8, 8, generator=g) * 0.1
    level = torch.rand(n, 1, 1, 1, generator=g) * 0.5 + shift
    base[:, :, 2:6, 2:6] += level
    return base.clamp(0, 1)


def test_same_distribution_has_no_drifted_factor():
    drift = data_drift(
        "abc",
        _card(0.01, {}, 0.0),
        _card(0.01, {}, 0.0),
        _images(200, 0),
        _images(200, 1),
        n_factors=4,
        n_permutations=100,
    )
    assert drift.drifted_factors == []
    assert drift.metrics()["data_drifted_factors"] == 0.0
    assert drift.metrics()["data_factor_drift_max_ks"] < 0.2


def test_shifted_factor_is_found():
    drift = data_drift(
        "abc",
        _card(0.01, {}, 0.0),
        _card(0.01, {}, 0.0),
        _images(200, 0),
        _images(200, 1, shift=0.3),
        n_factors=4,
        n_permutations=100,
    )
    # The brightness of the centre square is the top factor of the baseline.
    assert 0 in drift.drifted_factors
    assert drift.metrics()["data_factor_drift_max_ks"] > 0.5
    assert set(drift.metrics()) == set(DRIFT_METRIC_NAMES)
    record = drift.as_dict()
    assert record["baseline_commit"] == "abc"
    assert record["factors"][0]["drifted"] is True
    assert len(record["factors"]) == 4


def test_drift_rejects_bad_input():
    card = _card(0.01, {}, 0.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        data_drift("c", card, card, _images(10, 0), _images(10, 1), alpha=1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        data_drift("c", card, card, _images(10, 0), torch.rand(10, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 3 images"):
        data_drift("c", card, card, _images(2, 0), _images(10, 1))


def test_drift_of_images_with_fewer_pixels_than_components():
    card = _card(0.01, {}, 0.0)
    g = torch.Generator().manual_seed(0)
    tiny_a, tiny_b = torch.rand(20, 1, 2, 2, generator=g), torch.rand(20, 1, 2, 2, generator=g)
    drift = data_drift("c", card, card, tiny_a, tiny_b, n_factors=8, n_permutations=20)
    assert len(drift.factors) == 4  # one component per pixel
