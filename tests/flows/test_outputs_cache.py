"""The evaluation's outputs cache (logits and embeddings), keyed by model weights, data
commit, the split's images and their format."""

from __future__ import annotations

import pytest
import torch

import flows.tasks.evaluation as evaluation
from flows.tasks.evaluation import cached_outputs, weights_digest
from tai.data.images import FolderImages, input_format
from tai.data.profile import scan_dataset
from tai.evaluation.inference import model_embeddings, predict_logits
from tai.modeling.models import build_model
from tests.conftest import write_tiny_dataset


@pytest.fixture
def model():
    return build_model("small_cnn", in_channels=1, num_classes=3, seed=0).eval()


@pytest.fixture
def split(tmp_path):
    write_tiny_dataset(tmp_path / "data", counts={"test": 2}, size=12)
    records = scan_dataset(tmp_path / "data", "tiny")
    return FolderImages(
        tmp_path / "data", records, ["0", "1", "2"], input_format(tmp_path / "data", records)
    )


def test_outputs_are_computed_once_per_model_and_commit(model, split, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    logits, embeddings = cached_outputs(model, split, cache, data_commit="c1")
    images = split.images(range(len(split)))
    torch.testing.assert_close(logits, predict_logits(model, images))
    torch.testing.assert_close(embeddings, model_embeddings(model, images))
    assert len(list((cache / "outputs").glob("*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("computed again instead of read from the cache")

    monkeypatch.setattr(evaluation, "stream_outputs", fail)
    again = cached_outputs(model, split, cache, data_commit="c1")
    assert torch.equal(again[0], logits) and torch.equal(again[1], embeddings)
    with pytest.raises(AssertionError, match="computed again"):
        cached_outputs(model, split, cache, data_commit="c2")


def test_other_weights_are_another_cache_entry(model, split, tmp_path):
    cache = tmp_path / "cache"
    other = build_model("small_cnn", in_channels=1, num_classes=3, seed=1).eval()
    assert weights_digest(model) != weights_digest(other)
    assert weights_digest(model) == weights_digest(
        build_model("small_cnn", in_channels=1, num_classes=3, seed=0)
    )
    a = cached_outputs(model, split, cache, data_commit="c1")
    b = cached_outputs(other, split, cache, data_commit="c1")
    assert not torch.equal(a[0], b[0])
    assert len(list((cache / "outputs").glob("*.pt"))) == 2
    # Nothing half-written is left beside the entries.
    assert not list((cache / "outputs").glob(".*"))


def test_a_smaller_split_is_another_cache_entry(model, split, tmp_path):
    cache = tmp_path / "cache"
    cached_outputs(model, split, cache, data_commit="c1")
    fewer = FolderImages(split.root, split.records[:3], split.classes, split.fmt)
    logits, _ = cached_outputs(model, fewer, cache, data_commit="c1")
    assert len(logits) == 3


@pytest.mark.parametrize(
    "content",
    [b"not a torch file", "wrong rows", "not tensors"],
    ids=["garbage bytes", "wrong number of rows", "wrong types"],
)
def test_an_unreadable_cache_entry_is_computed_again_and_replaced(
    model, split, tmp_path, content, caplog
):
    cache = tmp_path / "cache"
    logits, embeddings = cached_outputs(model, split, cache, data_commit="c1")
    (entry,) = (cache / "outputs").glob("*.pt")
    if content == "wrong rows":
        torch.save({"logits": logits[:2], "embeddings": embeddings[:2]}, entry)
    elif content == "not tensors":
        torch.save({"logits": [1, 2], "embeddings": "x"}, entry)
    else:
        entry.write_bytes(content)
    with caplog.at_level("WARNING"):
        again = cached_outputs(model, split, cache, data_commit="c1")
    assert torch.equal(again[0], logits) and torch.equal(again[1], embeddings)
    assert "outputs cache" in caplog.text and "computing the outputs again" in caplog.text
    # The bad entry was replaced by a good one, read back without computing.
    loaded = torch.load(entry, weights_only=True)
    assert torch.equal(loaded["logits"], logits)
