"""A split of a materialised data commit read into tensors: images in [0, 1] and classes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tai.data.profile import ImageRecord, load_image


@dataclass(frozen=True)
class SplitTensors:
    """One split in memory: images (N, C, H, W) in [0, 1], class indices (N,) and each
    image's path relative to the data root (``<dataset>/<split>/<label>/<file>``)."""

    images: Tensor
    targets: Tensor
    paths: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.targets)


def load_split(
    root: Path,
    records: list[ImageRecord],
    classes: list[str],
    *,
    max_images: int = 0,
    seed: int = 0,
) -> SplitTensors:
    """Read the images of ``records`` into tensors, in a seeded random order.

    The order matters: TAI callbacks check the first ``budget`` validation samples, and
    files come sorted by class. ``max_images`` > 0 keeps a subset that holds every class.
    """
    rng = np.random.default_rng(seed)
    records = [records[i] for i in rng.permutation(len(records))]
    if max_images and len(records) > max_images:
        # Round-robin over classes so a small cap still keeps every class.
        by_class: dict[str, list[ImageRecord]] = {}
        for r in records:
            by_class.setdefault(r.label, []).append(r)
        picked: list[ImageRecord] = []
        while len(picked) < max_images:
            for members in by_class.values():
                if members and len(picked) < max_images:
                    picked.append(members.pop())
        records = [picked[i] for i in rng.permutation(len(picked))]
    index = {name: i for i, name in enumerate(classes)}
    arrays = [load_image(root / r.path) for r in records]
    images = torch.from_numpy(np.stack(arrays)).float()
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    targets = torch.tensor([index[r.label] for r in records], dtype=torch.long)
    return SplitTensors(images.contiguous(), targets, tuple(r.path for r in records))
