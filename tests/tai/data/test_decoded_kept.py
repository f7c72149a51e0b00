"""The data card decodes each image once when the decoded images fit in memory."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from tai.data import card as card_module
from tai.data import profile
from tai.data.card import build_data_card
from tai.data.profile import decoded_images_kept, load_image
from tests.conftest import write_tiny_dataset


def _counting_decodes(monkeypatch) -> Counter:
    opened: Counter = Counter()
    real = profile.open_image_safely

    def counted(source, *args, **kwargs):
        opened[str(source) if not isinstance(source, bytes) else "bytes"] += 1
        return real(source, *args, **kwargs)

    monkeypatch.setattr(profile, "open_image_safely", counted)
    return opened


def test_the_card_decodes_each_image_once_and_is_the_same_card(tmp_path, monkeypatch):
    write_tiny_dataset(tmp_path, counts={"train": 12, "val": 4, "test": 4}, classes=3, size=12)
    opened = _counting_decodes(monkeypatch)
    kept = json.dumps(build_data_card(tmp_path, "tiny", n_components=8, n_factors=4))
    # validation reads every file's bytes once; nothing is opened by path afterwards
    assert opened["bytes"] == 60 and sum(opened.values()) == 60

    monkeypatch.setattr(card_module, "DECODED_CACHE_BYTES", 0)
    opened.clear()
    decoded_again = json.dumps(build_data_card(tmp_path, "tiny", n_components=8, n_factors=4))
    assert sum(opened.values()) > 60  # the samples are decoded again from their paths
    assert decoded_again == kept


def test_kept_images_are_copies_and_the_limit_holds(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 2, "val": 1, "test": 1}, classes=2, size=8)
    files = sorted(tmp_path.rglob("*.png"))
    one = 8 * 8 * 4  # float32 pixels of one greyscale 8 x 8 image

    with decoded_images_kept(one):
        first = load_image(files[0])
        first[:] = 7.0  # the caller's copy
        assert load_image(files[0]).max() <= 1.0
        load_image(files[1])  # over the limit: decoded, not kept
        assert list(profile._KEPT.get().arrays) == [str(files[0])]
    assert profile._KEPT.get() is None
    np.testing.assert_array_equal(load_image(files[1]), load_image(files[1]))


def test_an_enclosing_block_keeps_the_cards_images_for_the_traversals(tmp_path, monkeypatch):
    from tai.data.card import factor_traversals

    write_tiny_dataset(tmp_path, counts={"train": 12, "val": 4, "test": 4}, classes=3, size=12)
    opened = _counting_decodes(monkeypatch)
    alone = factor_traversals(tmp_path, "tiny", n_factors=2)
    decoded_alone = sum(v for k, v in opened.items() if k != "bytes")
    assert decoded_alone >= 12  # each training image decoded from its path

    opened.clear()
    with decoded_images_kept(2**20):
        build_data_card(tmp_path, "tiny", n_components=8, n_factors=4)
        outer = profile._KEPT.get()
        kept = factor_traversals(tmp_path, "tiny", n_factors=2)
        assert profile._KEPT.get() is outer  # the card's own block used the enclosing one
    assert sum(opened.values()) == 60  # validation's pass only: the traversals read kept images
    for a, b in zip(alone[0], kept[0], strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert alone[1] == kept[1]
