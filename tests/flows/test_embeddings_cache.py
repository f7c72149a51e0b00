"""The evaluation's embeddings cache, keyed by model weights and data commit."""

from __future__ import annotations

import pytest
import torch

import flows.tasks.evaluation as evaluation
from flows.tasks.evaluation import cached_embeddings, weights_digest
from tai.evaluation.evaluate import model_embeddings
from tai.modeling.models import build_model


@pytest.fixture
def model():
    return build_model("small_cnn", in_channels=1, num_classes=3, seed=0).eval()


def test_embeddings_are_computed_once_per_model_and_commit(model, tmp_path, monkeypatch):
    images = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    first = cached_embeddings(model, images, tmp_path, data_commit="c1")
    assert torch.equal(first, model_embeddings(model, images))
    assert len(list((tmp_path / "embeddings").glob("*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("computed again instead of read from the cache")

    monkeypatch.setattr(evaluation, "model_embeddings", fail)
    assert torch.equal(cached_embeddings(model, images, tmp_path, data_commit="c1"), first)
    with pytest.raises(AssertionError, match="computed again"):
        cached_embeddings(model, images, tmp_path, data_commit="c2")


def test_other_weights_are_another_cache_entry(model, tmp_path):
    images = torch.rand(4, 1, 12, 12)
    other = build_model("small_cnn", in_channels=1, num_classes=3, seed=1).eval()
    assert weights_digest(model) != weights_digest(other)
    assert weights_digest(model) == weights_digest(
        build_model("small_cnn", in_channels=1, num_classes=3, seed=0)
    )
    a = cached_embeddings(model, images, tmp_path, data_commit="c1")
    b = cached_embeddings(other, images, tmp_path, data_commit="c1")
    assert not torch.equal(a, b)
    assert len(list((tmp_path / "embeddings").glob("*.pt"))) == 2
    # Nothing half-written is left beside the entries.
    assert not list((tmp_path / "embeddings").glob(".*"))
