"""The detector self-test: false alarms on benign batches, detections on shifted ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tai.monitoring.checks import MONITORING_METRICS
from tai.monitoring.selftest import ShiftedBatch, detector_self_test

FAST = {"n_resamples": 200, "n_permutations": 100}


@pytest.fixture(scope="module")
def held_out(world):
    return world.sample(2000, np.random.default_rng(21))


def drift_or_low_accuracy(metrics, bounds):
    return metrics["drift_p_value"] < 0.01 or bounds["estimated_accuracy"][1] < 0.85


def test_benign_batches_rarely_alarm_and_shifted_ones_do(world, reference, held_out):
    rng = np.random.default_rng(22)
    noisy = [world.sample(300, rng, noise_scale=1.5) for _ in range(3)]
    shifts = [ShiftedBatch("noise", b.probs, b.embeddings, b.accuracy) for b in noisy]
    contrast = world.sample(300, rng, signal_scale=0.6)
    shifts.append(("contrast", contrast.probs, contrast.embeddings, contrast.accuracy))
    result = detector_self_test(
        reference,
        held_out.probs,
        held_out.embeddings,
        held_out.targets,
        alarm=drift_or_low_accuracy,
        batch_size=300,
        n_benign=10,
        shifts=shifts,
        **FAST,
    )
    assert len(result.benign) == 10 and len(result.shifted) == 4
    assert result.false_alarm_rate <= 0.1
    low, high = result.false_alarm_interval
    assert low <= result.false_alarm_rate <= high
    assert result.detection_rate == 1.0
    assert result.detection_by_shift == {"noise": 1.0, "contrast": 1.0}
    assert result.benign_coverage >= 0.8
    errors = result.errors()
    assert errors["atc"] < errors["ac"]  # contrast and noise: ATC closer (test_atc.py)
    summary = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert summary["n_benign"] == 10 and summary["detection_rate"] == 1.0


def test_the_alarm_sees_the_declared_metrics_and_bounds(reference, held_out):
    seen = []

    def spy(metrics, bounds):
        seen.append((metrics, bounds))
        return False

    result = detector_self_test(
        reference,
        held_out.probs,
        held_out.embeddings,
        held_out.targets,
        alarm=spy,
        batch_size=100,
        n_benign=2,
        **FAST,
    )
    assert len(seen) == 2
    assert list(seen[0][0]) == list(MONITORING_METRICS)
    assert "estimated_accuracy" in seen[0][1]
    assert result.false_alarm_rate == 0.0
    assert np.isnan(result.detection_rate) and result.detection_by_shift == {}
    # The benign batches' true accuracies come from the held-out labels.
    assert all(0.5 < o.true_accuracy <= 1 for o in result.benign)


def test_invalid_arguments_are_refused(reference, held_out):
    args = (reference, held_out.probs, held_out.embeddings, held_out.targets)
    with pytest.raises(TypeError, match="callable"):
        detector_self_test(*args, alarm=0.5)
    with pytest.raises(TypeError, match="return a bool"):
        detector_self_test(*args, alarm=lambda m, b: "yes", batch_size=50, n_benign=1, **FAST)
    with pytest.raises(ValueError, match="at most the held-out images"):
        detector_self_test(*args, alarm=drift_or_low_accuracy, batch_size=5000)
    with pytest.raises(ValueError, match=r"shifts\[0\]"):
        detector_self_test(*args, alarm=drift_or_low_accuracy, shifts=[("only a name",)])
    with pytest.raises(ValueError, match="held_out_targets"):
        detector_self_test(
            reference,
            held_out.probs,
            held_out.embeddings,
            held_out.targets[:-1],
            alarm=drift_or_low_accuracy,
        )


def test_a_drift_threshold_the_permutations_cannot_reach_fails_before_any_batch(
    reference, held_out
):
    calls = []

    def spy(metrics, bounds):
        calls.append(metrics)
        return False

    with pytest.raises(ValueError, match="never below the drift_p_value minimum of 0.001"):
        detector_self_test(
            reference,
            held_out.probs,
            held_out.embeddings,
            held_out.targets,
            alarm=spy,
            n_permutations=500,
            drift_p_min=0.001,
        )
    assert calls == []
