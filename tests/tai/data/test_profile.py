import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tai.data import profile as data_profile
from tai.data.profile import (
    DatasetError,
    ImageRecord,
    estimate_noise_sigma,
    load_image,
    noise_profile,
    scan_dataset,
    validate_dataset,
)

HEIGHT, WIDTH = 6, 8
COUNTS = {"train": {"cat": 3, "dog": 2}, "val": {"cat": 1, "dog": 1}, "test": {"cat": 1, "dog": 2}}


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _random_image(rng: np.random.Generator, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """``tmp_path/shapes/<split>/<label>/<i>.png``: 6x8 greyscale images, all different."""
    rng = np.random.default_rng(0)
    for split, labels in COUNTS.items():
        for label, count in labels.items():
            for i in range(count):
                _write(tmp_path / "shapes" / split / label / f"{i}.png", _random_image(rng))
    return tmp_path


def _smooth_image(size: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    return 0.5 + 0.15 * np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y) + 0.1 * (x - 0.5)


# --- validate_dataset -----------------------------------------------------------------


def test_valid_dataset_is_summarised(root):
    summary = validate_dataset(root, "shapes")

    assert summary.dataset == "shapes"
    assert summary.splits == COUNTS
    assert summary.image_size == (HEIGHT, WIDTH)
    assert summary.mode == "L"
    assert summary.num_classes == 2
    assert summary.classes == ["cat", "dog"]
    assert summary.duplicates == []
    assert summary.class_balance == {"train": 2 / 3, "val": 1.0, "test": 0.5}
    as_dict = json.loads(json.dumps(summary.as_dict()))
    assert as_dict["image_size"] == [HEIGHT, WIDTH]
    assert as_dict["splits"] == COUNTS


def test_byte_identical_files_are_grouped_as_duplicates(root):
    source = root / "shapes" / "train" / "cat" / "0.png"
    shutil.copy(source, root / "shapes" / "test" / "dog" / "copy.png")
    shutil.copy(source, root / "shapes" / "val" / "cat" / "copy.png")

    summary = validate_dataset(root, "shapes")

    assert summary.duplicates == [
        ["shapes/test/dog/copy.png", "shapes/train/cat/0.png", "shapes/val/cat/copy.png"]
    ]


def test_every_image_is_handed_to_on_image_once_in_scan_order(root):
    seen = []
    summary = validate_dataset(
        root, "shapes", on_image=lambda record, sha, pixels: seen.append((record, sha, pixels))
    )
    assert [record for record, _, _ in seen] == scan_dataset(root, "shapes")
    record, sha, pixels = seen[0]
    assert sha == hashlib.sha256((root / record.path).read_bytes()).hexdigest()
    np.testing.assert_array_equal(pixels, load_image(root / record.path))
    assert summary == validate_dataset(root, "shapes")


def test_a_single_class_is_not_a_usable_dataset(root):
    for split in COUNTS:
        shutil.rmtree(root / "shapes" / split / "dog")

    with pytest.raises(
        DatasetError, match=r"shapes has a single class, 'cat': a classifier needs at least two"
    ):
        validate_dataset(root, "shapes")


def test_missing_dataset_folder_is_reported(root):
    with pytest.raises(DatasetError, match=r"dataset folder .*digits does not exist.*\['shapes'\]"):
        validate_dataset(root, "digits")


def test_missing_split_is_named_with_the_splits_found(root):
    shutil.rmtree(root / "shapes" / "val")

    with pytest.raises(
        DatasetError,
        match=r"split folder\(s\) \['val'\] missing .*found splits: \['test', 'train'\]",
    ):
        validate_dataset(root, "shapes")


def test_required_splits_can_be_narrowed(root):
    shutil.rmtree(root / "shapes" / "val")

    summary = validate_dataset(root, "shapes", required_splits=("train", "test"))

    assert sorted(summary.splits) == ["test", "train"]


def test_empty_class_folder_is_named(root):
    (root / "shapes" / "train" / "bird").mkdir()
    (root / "shapes" / "train" / "bird" / "notes.txt").write_text("not an image")

    with pytest.raises(DatasetError, match=r"class folder .*train/bird holds no images"):
        validate_dataset(root, "shapes")


def test_undecodable_image_is_named_with_what_to_do(root):
    (root / "shapes" / "train" / "cat" / "x.png").write_bytes(b"definitely not a png")

    with pytest.raises(
        DatasetError,
        match=r"cannot decode image .*train/cat/x\.png.*remove or replace the file and commit",
    ):
        validate_dataset(root, "shapes")


def test_truncated_image_is_undecodable(root):
    path = root / "shapes" / "val" / "dog" / "0.png"
    path.write_bytes(path.read_bytes()[:60])

    with pytest.raises(DatasetError, match=r"cannot decode image .*val/dog/0\.png"):
        validate_dataset(root, "shapes")


def test_images_of_other_sizes_and_modes_are_counted_not_refused(root):
    """Photos are never all one size: the summary counts sizes and modes, names the most
    common size and the mode the model takes (RGB as soon as one image is in colour)."""
    _write(root / "shapes" / "val" / "dog" / "big.png", np.zeros((HEIGHT, WIDTH + 1), np.uint8))
    _write(root / "shapes" / "val" / "dog" / "rgb.png", np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    summary = validate_dataset(root, "shapes")
    total = sum(n for labels in summary.splits.values() for n in labels.values())
    assert summary.sizes == {f"{HEIGHT}x{WIDTH}": total - 1, f"{HEIGHT}x{WIDTH + 1}": 1}
    assert summary.modes == {"L": total - 1, "RGB": 1}
    assert summary.image_size == (HEIGHT, WIDTH) and summary.mode == "RGB"
    assert validate_dataset(root, "shapes").as_dict()["sizes"] == summary.sizes


def test_class_sets_differing_between_splits_are_reported(root):
    _write(root / "shapes" / "test" / "bird" / "0.png", np.zeros((HEIGHT, WIDTH), np.uint8))

    with pytest.raises(
        DatasetError, match=r"class folders differ between splits.*split 'train' lacks \['bird'\]"
    ):
        validate_dataset(root, "shapes")


def test_split_without_class_folders_is_reported(root):
    shutil.rmtree(root / "shapes" / "test")
    (root / "shapes" / "test").mkdir()

    with pytest.raises(DatasetError, match=r"split folder .*test has no class folders"):
        validate_dataset(root, "shapes")


def test_dataset_without_any_classes_is_reported(tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / "empty" / split).mkdir(parents=True)

    with pytest.raises(DatasetError, match="no classes at all"):
        validate_dataset(tmp_path, "empty")


# --- scan_dataset and load_image ------------------------------------------------------


def test_scan_lists_images_relative_to_root_and_skips_other_files(root):
    (root / "shapes" / "train" / "cat" / ".DS_Store").write_bytes(b"x")
    (root / "shapes" / "train" / "cat" / "readme.txt").write_text("x")
    (root / "shapes" / "metadata.csv").write_text("path,label,split\n")
    _write(root / "shapes" / "train" / "cat" / "upper.JPG", np.zeros((HEIGHT, WIDTH), np.uint8))

    records = scan_dataset(root, "shapes")

    assert len(records) == sum(sum(c.values()) for c in COUNTS.values()) + 1
    assert ImageRecord("shapes/train/cat/upper.JPG", "train", "cat") in records
    assert records[0] == ImageRecord("shapes/test/cat/0.png", "test", "cat")
    assert all((root / r.path).is_file() for r in records)


def test_scan_reports_missing_dataset(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path, "nothing")


def test_load_image_scales_greyscale_to_unit_float(tmp_path):
    pixels = np.array([[0, 51, 255]], dtype=np.uint8)

    image = load_image(_write(tmp_path / "g.png", pixels))

    assert image.dtype == np.float32
    np.testing.assert_allclose(image, [[0.0, 0.2, 1.0]])


def test_load_image_returns_rgb_and_drops_alpha(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128

    image = load_image(_write(tmp_path / "a.png", rgba))

    assert image.shape == (2, 3, 3)
    np.testing.assert_allclose(image[..., 0], 1.0)


def test_load_image_scales_sixteen_bit_greyscale(tmp_path):
    pixels = np.array([[0, 65535]], dtype=np.uint16)

    image = load_image(_write(tmp_path / "deep.png", pixels))

    np.testing.assert_allclose(image, [[0.0, 1.0]])


def test_load_image_reports_undecodable_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"junk")

    with pytest.raises(DatasetError, match=r"cannot decode image .*x\.png"):
        load_image(tmp_path / "x.png")


# --- noise ----------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1, 0.2])
def test_noise_sigma_of_gaussian_noise_is_recovered_within_20_percent(sigma):
    rng = np.random.default_rng(int(sigma * 1000))
    noisy = _smooth_image() + rng.normal(0.0, sigma, size=(128, 128))

    assert estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.2)


def test_noise_sigma_of_colour_image_averages_channels():
    rng = np.random.default_rng(5)
    clean = np.stack([_smooth_image()] * 3, axis=-1)
    noisy = clean + rng.normal(0.0, 1.0, size=clean.shape) * np.array([0.02, 0.05, 0.08])

    assert estimate_noise_sigma(noisy) == pytest.approx(0.05, rel=0.2)


def test_noise_sigma_scales_integer_images_to_unit_range():
    rng = np.random.default_rng(6)
    noisy = np.clip(_smooth_image() + rng.normal(0.0, 0.05, size=(128, 128)), 0, 1)
    as_uint8 = np.round(noisy * 255).astype(np.uint8)

    assert estimate_noise_sigma(as_uint8) == pytest.approx(estimate_noise_sigma(noisy), rel=0.05)


def test_noise_sigma_of_a_flat_image_is_zero_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # skimage takes the median of no coefficient at all for these: NaN before.
        assert estimate_noise_sigma(np.zeros((8, 8))) == 0.0
        assert estimate_noise_sigma(np.full((8, 8), 100 / 255, np.float32)) == 0.0
        assert estimate_noise_sigma(np.zeros((4, 3))) == 0.0  # narrow: no warning either
        assert estimate_noise_sigma(np.full((8, 8), 0.5)) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(7)
    colour = np.stack([np.full((128, 128), 0.5)] * 3, axis=-1)
    colour[..., 0] = np.clip(_smooth_image() + rng.normal(0.0, 0.06, (128, 128)), 0, 1)
    # One noisy channel, two flat ones: their mean, not NaN.
    assert estimate_noise_sigma(colour) == pytest.approx(0.02, rel=0.2)


def test_noise_sigma_rejects_non_finite_pixels():
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        estimate_noise_sigma(np.full((8, 8), np.nan))


def test_noise_sigma_rejects_non_image_array():
    with pytest.raises(ValueError, match=r"image must have shape \(H, W\) or \(H, W, C\)"):
        estimate_noise_sigma(np.zeros(10))


@pytest.fixture
def noisy_root(tmp_path: Path) -> Path:
    """``noisy/train/{clean,noisy}``: 4 smooth 64x64 images each, sigma 0 and 0.1."""
    rng = np.random.default_rng(1)
    for label, sigma in (("clean", 0.0), ("noisy", 0.1)):
        for i in range(4):
            image = _smooth_image(64) + rng.normal(0.0, sigma, size=(64, 64))
            pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
            _write(tmp_path / "noisy" / "train" / label / f"{i}.png", pixels)
    return tmp_path


def test_noise_profile_separates_clean_and_noisy_classes(noisy_root):
    profile = noise_profile(noisy_root, scan_dataset(noisy_root, "noisy"))

    stats = profile.per_split_class["train"]
    assert set(stats) == {"clean", "noisy"}
    assert set(stats["noisy"]) == {"median", "p90", "mean"}
    assert stats["noisy"]["median"] == pytest.approx(0.1, rel=0.2)
    assert stats["clean"]["p90"] < 0.02
    assert stats["clean"]["median"] < profile.overall_median < stats["noisy"]["median"]
    assert json.loads(json.dumps(profile.as_dict()))["overall_median"] == profile.overall_median


def test_noise_profile_samples_at_most_max_per_class_deterministically(noisy_root, monkeypatch):
    loaded: list[str] = []
    real_load = data_profile.load_image

    def counting_load(path):
        loaded.append(Path(path).name)
        return real_load(path)

    monkeypatch.setattr(data_profile, "load_image", counting_load)
    records = scan_dataset(noisy_root, "noisy")

    first = noise_profile(noisy_root, records, max_per_class=2, seed=3)
    first_loaded = list(loaded)
    loaded.clear()
    second = noise_profile(noisy_root, records, max_per_class=2, seed=3)

    assert len(first_loaded) == 4  # 2 per class
    assert loaded == first_loaded
    assert first == second


def test_noise_profile_rejects_empty_records(tmp_path):
    with pytest.raises(ValueError, match="records is empty"):
        noise_profile(tmp_path, [])


def test_noise_profile_rejects_non_positive_sample_size(noisy_root):
    records = scan_dataset(noisy_root, "noisy")
    with pytest.raises(ValueError, match="max_per_class must be at least 1 or None, got 0"):
        noise_profile(noisy_root, records, max_per_class=0)


def test_noise_sigma_is_skimages_estimate_sigma_to_the_last_bit():
    # The reference: skimage per channel (flat channels give NaN there, 0 here), averaged.
    import warnings

    from skimage.restoration import estimate_sigma

    def reference(image):
        image = np.asarray(image, dtype=np.float64)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sigmas = (
                [estimate_sigma(image, channel_axis=None)]
                if image.ndim == 2
                else estimate_sigma(image, channel_axis=-1, average_sigmas=False)
            )
        return float(np.mean(np.nan_to_num(np.asarray(sigmas, dtype=np.float64), nan=0.0)))

    rng = np.random.default_rng(11)
    images = [
        _smooth_image() + rng.normal(0.0, 0.05, size=(128, 128)),
        rng.random((28, 28)),
        rng.random((31, 17, 3)),
        rng.random((9, 9, 1)),
        np.stack([np.zeros((12, 12)), rng.random((12, 12)), np.full((12, 12), 0.5)], axis=-1),
        rng.random((4, 3)),
    ]
    for image in images:
        assert estimate_noise_sigma(image) == reference(image)
