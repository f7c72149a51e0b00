"""The reference: what it holds, its file, and the inputs it refuses."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tai.monitoring.atc import atc_scores, fit_threshold
from tai.monitoring.reference import MonitoringReference, fit_reference
from tests.tai.monitoring.conftest import CLASSES


@pytest.fixture(scope="module")
def data(world):
    rng = np.random.default_rng(7)
    return world.sample(1500, rng), world.sample(2500, rng)


def _fit(data, **options):
    val, train = data
    kwargs = {
        "train_embeddings": train.embeddings,
        "train_targets": train.targets,
        "classes": CLASSES,
        "abstention_threshold": 0.6,
        "n_boot": 20,
        "max_reference": 500,
    }
    return fit_reference(val.probs, val.targets, **{**kwargs, **options})


def test_it_holds_the_validation_statistics(data):
    val, train = data
    ref = _fit(data)
    right = val.probs.argmax(1) == val.targets
    assert ref.threshold == fit_threshold(atc_scores(val.probs), right)
    assert ref.val_accuracy == pytest.approx(right.mean())
    assert ref.val_confidence == pytest.approx(val.probs.max(1).mean())
    assert ref.expected_deferral_rate == pytest.approx(np.mean(val.probs.max(1) < 0.6))
    assert ref.n_val == 1500 and ref.bootstrap_thresholds.shape == (20,)
    np.testing.assert_allclose(ref.train_priors, np.bincount(train.targets, minlength=10) / 2500)
    assert ref.val_confusion.sum() == pytest.approx(1.0)
    assert ref.val_class_support.sum() == 1500
    assert ref.classes == tuple(CLASSES) and ref.n_classes == 10 and ref.dim == 16


def test_the_embedding_sample_is_capped_and_its_factor_scores_match(data):
    _, train = data
    ref = _fit(data)
    assert ref.embeddings.shape == (500, 16) and ref.embeddings.dtype == np.float32
    # Every stored row is a training embedding.
    rows = {tuple(np.float32(r)) for r in train.embeddings}
    assert all(tuple(r) in rows for r in ref.embeddings)
    assert ref.factor_components.shape == (8, 16)
    np.testing.assert_allclose(
        ref.factor_scores, ref.factors.transform(ref.embeddings.astype(float)), atol=1e-4
    )
    # The factors are fitted on every training embedding: their mean is the full mean.
    np.testing.assert_allclose(ref.factor_mean, train.embeddings.mean(axis=0))


def test_it_is_deterministic_for_a_seed_and_read_only(data):
    a, b, c = _fit(data, seed=3), _fit(data, seed=3), _fit(data, seed=4)
    np.testing.assert_array_equal(a.bootstrap_thresholds, b.bootstrap_thresholds)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert not np.array_equal(a.embeddings, c.embeddings)
    with pytest.raises(ValueError, match="read-only"):
        a.embeddings[0, 0] = 1.0


def test_torch_tensors_are_accepted(data):
    val, train = data
    ref = fit_reference(
        torch.from_numpy(val.probs).float(),
        torch.from_numpy(val.targets),
        train_embeddings=torch.from_numpy(train.embeddings),
        train_targets=torch.from_numpy(train.targets),
        classes=CLASSES,
        abstention_threshold=None,
        n_boot=5,
    )
    assert math.isnan(ref.abstention_threshold) and not ref.has_abstention
    assert math.isnan(ref.expected_deferral_rate)


def test_save_and_load_give_the_same_reference(reference, tmp_path):
    path = reference.save(tmp_path / "ref")
    assert path.name == "ref.npz" and path.stat().st_size < 400_000
    loaded = MonitoringReference.load(path)
    for name in vars(reference):
        mine, theirs = getattr(reference, name), getattr(loaded, name)
        if isinstance(mine, np.ndarray):
            np.testing.assert_array_equal(mine, theirs)
            assert mine.dtype == theirs.dtype
        else:
            assert mine == theirs, name


def test_a_reference_without_abstention_or_sigmas_round_trips(data, tmp_path):
    ref = _fit(data, abstention_threshold=None)
    loaded = MonitoringReference.load(ref.save(tmp_path / "r.npz"))
    assert loaded.noise_sigmas is None and math.isnan(loaded.abstention_threshold)


def test_load_refuses_a_file_that_is_not_a_reference(tmp_path, reference):
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="notes.npz is not a monitoring reference"):
        MonitoringReference.load(text)
    array = tmp_path / "array.npy"
    np.save(array, np.zeros(3))
    with pytest.raises(ValueError, match="not a monitoring reference"):
        MonitoringReference.load(array)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="no readable `meta`"):
        MonitoringReference.load(other)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, meta=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(ValueError, match="format 'something-else'"):
        MonitoringReference.load(foreign)
    newer = tmp_path / "newer.npz"
    with np.load(reference.save(tmp_path / "good.npz")) as data:
        stored = dict(data)
    meta = json.loads(str(stored["meta"]))
    np.savez(newer, **{**stored, "meta": np.array(json.dumps({**meta, "version": 99}))})
    with pytest.raises(ValueError, match="format version 99"):
        MonitoringReference.load(newer)
    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, **{k: v for k, v in stored.items() if k != "embeddings"})
    with pytest.raises(ValueError, match=r"lacks \['embeddings'\]"):
        MonitoringReference.load(damaged)
    with pytest.raises(FileNotFoundError):
        MonitoringReference.load(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"classes": CLASSES[:9]}, "10 columns|9 columns"),
        ({"classes": ["only"]}, "at least 2 class names"),
        ({"classes": list(range(10))}, "class names to be strings"),
        ({"score_kind": "entropy"}, "score_kind"),
        ({"abstention_threshold": 1.5}, "abstention_threshold"),
        ({"n_boot": 0}, "n_boot"),
        ({"max_reference": 1}, "max_reference"),
        ({"seed": 1.5}, "seed"),
        ({"train_embeddings": np.zeros((1, 16))}, "at least 2 rows"),
        ({"train_targets": np.array([0, 10])}, r"train_targets.*\[0, 10\)"),
        ({"train_noise_sigmas": np.array([-1.0])}, "noise levels >= 0"),
    ],
)
def test_invalid_inputs_are_refused_by_name(data, options, message):
    with pytest.raises(ValueError, match=message):
        _fit(data, **options)


def test_invalid_validation_data_is_refused(data):
    val, train = data
    common = {
        "train_embeddings": train.embeddings,
        "train_targets": train.targets,
        "classes": CLASSES,
        "abstention_threshold": 0.5,
    }
    with pytest.raises(ValueError, match="look like logits"):
        fit_reference(np.log(val.probs + 1e-9), val.targets, **common)
    with pytest.raises(ValueError, match="val_targets.*integer"):
        fit_reference(val.probs, val.targets.astype(float), **common)
    with pytest.raises(ValueError, match="one entry of `val_targets` per image"):
        fit_reference(val.probs, val.targets[:-1], **common)
    with pytest.raises(ValueError, match="at least 2 validation images"):
        fit_reference(val.probs[:1], val.targets[:1], **common)
