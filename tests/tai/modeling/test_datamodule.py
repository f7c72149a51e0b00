"""The data module streams a commit's images: decoded on demand, brought to one mode and
size, augmented for training only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tai.data.images import FolderImages, input_format
from tai.data.model_input import fit_images
from tai.data.profile import scan_dataset
from tai.modeling.datamodule import FolderDataModule
from tests.conftest import write_tiny_dataset


def test_datamodule_reads_every_split_with_sorted_class_indices(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 6, "val": 3, "test": 2}, classes=3, size=12)
    dm = FolderDataModule(tmp_path, "tiny", batch_size=4)
    dm.setup()
    assert dm.classes == ["0", "1", "2"]
    assert (dm.in_channels, dm.num_classes, dm.input_size) == (1, 3, (12, 12))
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 18, "val": 9, "test": 6}
    test = dm.eval_split("test")
    images = test.images(range(len(test)))
    assert images.shape == (6, 1, 12, 12)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    # the pixels are the file's, read on demand
    first = np.asarray(Image.open(tmp_path / test.paths[0]), dtype=np.float32) / 255
    assert torch.allclose(images[0, 0], torch.from_numpy(first))
    assert sorted(test.targets.tolist()) == [0, 0, 1, 1, 2, 2]
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 1, 12, 12) and y.dtype == torch.long


def test_splits_come_shuffled_so_a_budget_prefix_spans_the_classes(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 2, "val": 20, "test": 2}, classes=3, size=8)
    dm = FolderDataModule(tmp_path, "tiny")
    dm.setup()
    assert set(dm.splits["val"].targets[:12].tolist()) == {0, 1, 2}


def test_a_cap_on_images_keeps_every_class_and_is_seeded(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 10, "val": 10, "test": 10}, classes=3, size=8)
    a = FolderDataModule(tmp_path, "tiny", max_images_per_split=6, seed=1)
    b = FolderDataModule(tmp_path, "tiny", max_images_per_split=6, seed=1)
    a.setup()
    b.setup()
    assert sorted(a.splits["train"].targets.tolist()) == [0, 0, 1, 1, 2, 2]
    assert a.splits["train"].paths == b.splits["train"].paths


@pytest.mark.parametrize("augment", ["affine", "crop-flip"])
def test_only_the_training_loader_is_augmented(tmp_path, augment):
    write_tiny_dataset(tmp_path, counts={"train": 4, "val": 4, "test": 4}, classes=2, size=16)
    dm = FolderDataModule(tmp_path, "tiny", augment=augment, batch_size=4, seed=0)
    dm.setup()
    torch.manual_seed(0)
    augmented, _ = next(iter(dm.train_dataloader()))
    plain = dm.eval_split("train").images(range(4))
    assert augmented.shape == plain.shape
    # shuffled, so compare as sets: no augmented image is one of the originals
    assert not any(torch.equal(a, p) for a in augmented for p in plain)
    val, _ = next(iter(dm.val_dataloader()))
    assert torch.equal(val, dm.eval_split("val").images(range(4)))
    none = FolderDataModule(tmp_path, "tiny", augment="none", batch_size=4)
    none.setup()
    images, _ = next(iter(none.loader(none.splits["train"])))
    assert torch.equal(images, none.eval_split("train").images(range(4)))


def _mixed_folder(root):
    """Photos of mixed sizes and modes: greyscale and RGB, landscape and portrait."""
    rng = np.random.default_rng(0)
    shapes = [(20, 30), (30, 20), (24, 24), (24, 24), (48, 40)]
    for split in ("train", "val", "test"):
        for label in ("cat", "dog"):
            folder = root / "photos" / split / label
            folder.mkdir(parents=True)
            for i, (h, w) in enumerate(shapes):
                if i % 2:
                    array = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                else:
                    array = rng.integers(0, 255, (h, w), dtype=np.uint8)
                Image.fromarray(array).save(folder / f"{i}.png")
    return root


def test_a_folder_of_mixed_sizes_and_modes_is_brought_to_one(tmp_path):
    _mixed_folder(tmp_path)
    dm = FolderDataModule(tmp_path, "photos", image_size=16, batch_size=30)
    dm.setup()
    assert (dm.in_channels, dm.input_size) == (3, (16, 16))  # RGB: some are in colour
    assert dm.fmt.sizes == {"20x30": 6, "24x24": 12, "30x20": 6, "48x40": 6}
    assert dm.fmt.modes == {"L": 18, "RGB": 12}
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (10, 3, 16, 16)
    # without a size asked for, the most common size wins
    auto = FolderDataModule(tmp_path, "photos")
    auto.setup()
    assert auto.input_size == (24, 24)


def test_resizing_keeps_the_aspect_and_crops_the_centre():
    image = torch.zeros(1, 20, 40)
    image[:, :, 10:30] = 1.0  # a bright band in the middle third... of the width
    out = fit_images(image, in_channels=1, image_size=(10, 10))
    assert out.shape == (1, 10, 10)
    # shorter side 20 -> 10, width 40 -> 20, centre 10 columns kept: all of the band
    assert torch.allclose(out[:, :, 2:8], torch.ones(1, 10, 6), atol=1e-3)
    # already the size: untouched
    assert fit_images(image, in_channels=1, image_size=(20, 40)) is image


def test_memory_holds_a_batch_not_the_split(tmp_path, monkeypatch):
    """The dataset decodes only what is asked: reading one batch decodes one batch."""
    write_tiny_dataset(tmp_path, counts={"train": 30, "val": 3, "test": 3}, classes=3, size=8)
    records = [r for r in scan_dataset(tmp_path, "tiny") if r.split == "train"]
    decoded = []
    import tai.data.images as images_module

    real = images_module.load_image
    monkeypatch.setattr(images_module, "load_image", lambda p: decoded.append(p) or real(p))
    data = FolderImages(tmp_path, records, ["0", "1", "2"], input_format(tmp_path, records))
    assert decoded == []
    data.images([0, 5, 7])
    assert len(decoded) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_workers": -1}, "num_workers must be >= 0"),
        ({"augment": "mixup"}, "augment must be one of affine, crop-flip, none, got 'mixup'"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FolderDataModule(tmp_path, "tiny", **kwargs)


def test_an_unreadable_image_is_named(tmp_path):
    from tai.data.profile import DatasetError

    write_tiny_dataset(tmp_path, counts={"train": 2, "val": 2, "test": 2}, classes=2, size=8)
    (tmp_path / "tiny" / "train" / "0" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"tiny/train/0/0.png"):
        FolderDataModule(tmp_path, "tiny", seed=0).setup()
