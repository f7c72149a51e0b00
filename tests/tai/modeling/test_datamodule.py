import torch

from tai.modeling.datamodule import FolderDataModule
from tests.conftest import write_tiny_dataset


def test_datamodule_reads_every_split_with_sorted_class_indices(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 6, "val": 3, "test": 2}, classes=3, size=12)
    dm = FolderDataModule(tmp_path, "tiny", batch_size=4)
    dm.setup()
    assert dm.classes == ["0", "1", "2"]
    assert (dm.in_channels, dm.num_classes) == (1, 3)
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 18, "val": 9, "test": 6}
    test = dm.splits["test"]
    assert test.images.shape == (6, 1, 12, 12)
    assert 0.0 <= float(test.images.min()) and float(test.images.max()) <= 1.0
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
    assert torch.equal(a.splits["train"].images, b.splits["train"].images)
