"""Lightning DataModule over a materialised data commit, streamed from disk.

The commit's folder follows the data model of DESIGN.md:
``<root>/<dataset>/<split>/<label>/<file>``. Images are decoded when a batch needs them
(in DataLoader workers with ``num_workers`` > 0), brought to one mode and size
(:mod:`tai.data.images`) and augmented for training, so memory does not grow with the
number of images. The ``affine`` augmentation transforms each batch at once, in the
loader's collate step (:mod:`tai.modeling.augmentation`). Class indices follow the
sorted label names, so the same commit always gives the same mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from tai.data.images import FolderImages, InputFormat, input_format, subset
from tai.data.profile import scan_dataset
from tai.modeling.augmentation import AugmentingCollate, BatchRandomAffine

SPLITS = ("train", "val", "test")
AUGMENTATIONS = ("affine", "crop-flip", "none")


def augmentation(name: str, size: tuple[int, int]) -> Callable[[Tensor], Tensor] | None:
    """The per-image training augmentation ``name`` (applied as each image is read):

    - ``affine``: none here, see :func:`batch_augmentation`;
    - ``crop-flip``: a random resized crop (60-100% of the area) and a horizontal flip, the
      usual augmentation of photos;
    - ``none``.

    Raises:
        ValueError: an unknown name.
    """
    if name in ("affine", "none"):
        return None
    if name == "crop-flip":
        return v2.Compose(
            [
                v2.RandomResizedCrop(list(size), scale=(0.6, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
            ]
        )
    raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {name!r}")


def batch_augmentation(name: str) -> Callable[[Tensor], Tensor] | None:
    """The training augmentation ``name`` that transforms a whole batch: ``affine``, small
    rotations (10 degrees), shifts (8%) and zooms (10%), each image its own draw (digits,
    documents: a flip would change their meaning). None for the others."""
    if name == "affine":
        return BatchRandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1))
    return None


class FolderDataModule(pl.LightningDataModule):
    """Train/val/test loaders over ``<root>/<dataset>/<split>/<label>/<file>``.

    Args:
        root: the materialised commit folder.
        dataset: the dataset folder inside it.
        batch_size: images per batch.
        max_images_per_split: keep at most this many images per split (0 = all).
        image_size: bring every image to this size (an int for a square, or (H, W));
            0: the most common size of the data.
        augment: the training augmentation (:func:`augmentation`); True means ``affine``,
            False ``none``.
        num_workers: DataLoader worker processes that decode images (0: in the main one).
        seed: seeds subset selection and the training shuffle.

    Raises:
        ValueError: ``num_workers`` negative, an unknown ``augment``.
    """

    def __init__(
        self,
        root: Path,
        dataset: str,
        *,
        batch_size: int = 64,
        max_images_per_split: int = 0,
        image_size: int | tuple[int, int] = 0,
        augment: str | bool = "affine",
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_workers < 0:
            raise ValueError(
                f"num_workers must be >= 0 (0: decode in the main process), got {num_workers}"
            )
        augment = {True: "affine", False: "none"}.get(augment, augment)  # type: ignore[arg-type]
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
        self.root = Path(root)
        self.dataset = dataset
        self.batch_size = batch_size
        self.max_images_per_split = max_images_per_split
        self.image_size = image_size
        self.augment = augment
        self.num_workers = num_workers
        self.seed = seed
        self.classes: list[str] = []
        self.fmt: InputFormat | None = None
        self.splits: dict[str, FolderImages] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        records = scan_dataset(self.root, self.dataset)
        self.classes = sorted({r.label for r in records})
        self.fmt = input_format(self.root, records, image_size=self.image_size, seed=self.seed)
        for split in SPLITS:
            chosen = subset(
                [r for r in records if r.split == split], self.max_images_per_split, self.seed
            )
            transform = augmentation(self.augment, self.fmt.size) if split == "train" else None
            self.splits[split] = FolderImages(self.root, chosen, self.classes, self.fmt, transform)

    def eval_split(self, split: str) -> FolderImages:
        """A split without augmentation: what evaluation, calibration and monitoring read."""
        return self.splits[split].without_transform()

    @property
    def in_channels(self) -> int:
        assert self.fmt is not None, "call setup() first"
        return self.fmt.channels

    @property
    def input_size(self) -> tuple[int, int]:
        assert self.fmt is not None, "call setup() first"
        return self.fmt.size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def loader(
        self,
        dataset: FolderImages,
        *,
        shuffle: bool = False,
        augment: Callable[[Tensor], Tensor] | None = None,
    ) -> DataLoader:
        """Batches of ``dataset`` (decoded, and transformed by ``augment``, in the workers)."""
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=AugmentingCollate(augment) if augment is not None else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(
            self.splits["train"], shuffle=True, augment=batch_augmentation(self.augment)
        )

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits["val"])

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.splits["test"])
