"""Lightning DataModule over a materialised data commit.

The commit's folder follows the data model of DESIGN.md:
``<root>/<dataset>/<split>/<label>/<file>``. Splits are loaded into memory as float
tensors in [0, 1] (the default data sets are small; a streaming variant can replace
``load_split`` without touching the rest). Class indices follow the sorted label names
of the training split, so the same commit always gives the same mapping.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from tai.data.images import SplitTensors, load_split
from tai.data.profile import scan_dataset

SPLITS = ("train", "val", "test")


class _AugmentedDataset(Dataset):
    def __init__(self, data: SplitTensors, transform: v2.Transform | None) -> None:
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = self.data.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.data.targets[i]


class FolderDataModule(pl.LightningDataModule):
    """Train/val/test loaders over ``<root>/<dataset>/<split>/<label>/<file>``.

    Args:
        root: the materialised commit folder.
        dataset: the dataset folder inside it.
        batch_size: images per batch.
        max_images_per_split: keep at most this many images per split (0 = all).
        augment: small random affine jitter on training images.
        seed: seeds subset selection and the training shuffle.
    """

    def __init__(
        self,
        root: Path,
        dataset: str,
        *,
        batch_size: int = 64,
        max_images_per_split: int = 0,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.dataset = dataset
        self.batch_size = batch_size
        self.max_images_per_split = max_images_per_split
        self.augment = augment
        self.seed = seed
        self.classes: list[str] = []
        self.splits: dict[str, SplitTensors] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        records = scan_dataset(self.root, self.dataset)
        self.classes = sorted({r.label for r in records})
        for split in SPLITS:
            self.splits[split] = load_split(
                self.root,
                [r for r in records if r.split == split],
                self.classes,
                max_images=self.max_images_per_split,
                seed=self.seed,
            )

    @property
    def in_channels(self) -> int:
        return int(self.splits["train"].images.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        transform = None
        if train and self.augment:
            transform = v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1))
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            _AugmentedDataset(self.splits[split], transform),
            batch_size=self.batch_size,
            shuffle=train,
            generator=generator if train else None,
            num_workers=0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
