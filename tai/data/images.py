"""The images of a materialised data commit as tensors: in [0, 1], one mode, one size.

Real image folders are not the MNIST sample: photos come in every size, some greyscale
and some RGB. :func:`input_format` decides once what the model takes (the most common
size, or the size asked for; RGB when any image is in colour), from the files' headers
alone. :class:`FolderImages` is a dataset that decodes an image only when it is asked for
(a DataLoader's workers decode in parallel), converts it to that mode, resizes its shorter
side to the target and crops the centre, so memory does not grow with the number of
images; a split whose decoded images fit in ``DECODED_CACHE_BYTES`` keeps them after the
first read, since training reads every image once an epoch. :func:`load_split` reads a
bounded subset into memory for the data stage.

Every image goes through the decompression-bomb and size guard of
:func:`tai.data.image_guard.open_image_safely` before it is decoded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from tai.data.image_guard import open_image_safely
from tai.data.model_input import fit_images
from tai.data.profile import DatasetError, ImageRecord, load_image

# Images whose headers decide the input format (a seeded sample: headers are cheap).
FORMAT_SAMPLE = 2000
COLOUR_MODES = frozenset({"RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "PA"})
# A split whose decoded images take at most this much memory keeps them once read (the
# MNIST sample's training split: 11 MB; 10^5 RGB photos at 224 px: 60 GB, streamed).
# Decoding was a quarter of the demo's training time (7 of 28 s, py-spy, 2026-12-04).
DECODED_CACHE_BYTES = 512 * 2**20


@dataclass(frozen=True)
class InputFormat:
    """What the model takes: ``channels`` (1 greyscale, 3 RGB) and ``size`` (H, W).

    Attributes:
        channels: 1 or 3.
        size: ``(height, width)`` every image is brought to.
        sizes: ``"HxW"`` -> number of images of that original size in the sample.
        modes: PIL mode -> number of images in the sample.
        resized: whether any image is resized or converted.
    """

    channels: int
    size: tuple[int, int]
    sizes: dict[str, int]
    modes: dict[str, int]

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    @property
    def resized(self) -> bool:
        return len(self.sizes) > 1 or f"{self.size[0]}x{self.size[1]}" not in self.sizes

    def as_dict(self) -> dict:
        return {
            "channels": self.channels,
            "mode": self.mode,
            "size": list(self.size),
            "original_sizes": self.sizes,
            "original_modes": self.modes,
        }


def input_format(
    root: Path,
    records: Sequence[ImageRecord],
    *,
    image_size: int | Sequence[int] = 0,
    seed: int = 0,
    sample: int = FORMAT_SAMPLE,
) -> InputFormat:
    """The input format of a dataset, from the headers of a seeded sample of its images.

    Args:
        root: the materialised commit.
        records: its images (all splits).
        image_size: the size to bring every image to (an int for a square, or (H, W));
            0 takes the most common size of the sample.
        seed: seeds the sample.
        sample: images whose headers are read.

    Raises:
        DatasetError: an image's header cannot be read.
        ValueError: ``image_size`` is negative or not one or two numbers.
    """
    rng = np.random.default_rng(seed)
    picked = (
        [records[i] for i in rng.choice(len(records), size=sample, replace=False)]
        if len(records) > sample
        else list(records)
    )
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    for record in picked:
        try:
            with open_image_safely(Path(root) / record.path) as image:
                sizes[(image.height, image.width)] += 1
                modes[image.mode] += 1
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise DatasetError(
                f"cannot read image {record.path} ({type(err).__name__}: {err}); remove or "
                "replace the file and commit the change"
            ) from err
    target = _size(image_size) or sizes.most_common(1)[0][0]
    channels = 3 if any(m in COLOUR_MODES for m in modes) else 1
    return InputFormat(
        channels,
        target,
        {f"{h}x{w}": n for (h, w), n in sorted(sizes.items())},
        dict(sorted(modes.items())),
    )


def _size(value: int | Sequence[int]) -> tuple[int, int] | None:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"image_size must be >= 0 (0: the data's own size), got {value}")
        return (value, value) if value else None
    size = tuple(int(v) for v in value)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be one number or (height, width) >= 1, got {value!r}")
    return size  # type: ignore[return-value]


def downscaled(fmt: InputFormat, max_side: int) -> InputFormat:
    """``fmt`` with its size scaled down so the longer side is at most ``max_side`` (the
    data stage's pixel statistics do not need every pixel of a 224 x 224 photo)."""
    height, width = fmt.size
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return InputFormat(fmt.channels, size, fmt.sizes, fmt.modes)


def read_image(path: Path, fmt: InputFormat) -> Tensor:
    """One image as ``(channels, H, W)`` in [0, 1], in ``fmt``'s mode and size.

    Raises:
        DatasetError: the file cannot be decoded or fails the size guard.
    """
    array = load_image(path)
    image = torch.from_numpy(array)
    image = image[None] if image.ndim == 2 else image.permute(2, 0, 1)
    return fit_images(image.contiguous(), in_channels=fmt.channels, image_size=fmt.size)


class FolderImages(Dataset):
    """The images of ``records``, decoded when asked for: ``dataset[i]`` is
    ``(image, class index)``, the image in ``fmt``'s mode and size, then ``transform``.

    Args:
        root: the materialised commit.
        records: the images (in this order).
        classes: class names; a record's label indexes them.
        fmt: the input format (:func:`input_format`).
        transform: applied to each image after it is brought to ``fmt`` (augmentation).
        cache_bytes: keep decoded images in memory when all of them fit in this many bytes
            (0: always decode).
    """

    def __init__(
        self,
        root: Path,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        fmt: InputFormat,
        transform: Callable[[Tensor], Tensor] | None = None,
        *,
        cache_bytes: int = DECODED_CACHE_BYTES,
    ) -> None:
        self.root = Path(root)
        self.records = list(records)
        self.classes = list(classes)
        self.fmt = fmt
        self.transform = transform
        index = {name: i for i, name in enumerate(self.classes)}
        self.targets = torch.tensor([index[r.label] for r in self.records], dtype=torch.long)
        decoded = len(self.records) * fmt.channels * fmt.size[0] * fmt.size[1] * 4
        # Shared with without_transform()'s copy; each DataLoader worker fills its own.
        self._cache: dict[int, Tensor] | None = {} if decoded <= cache_bytes else None

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, i: int) -> Tensor:
        if self._cache is None:
            return read_image(self.root / self.records[i].path, self.fmt)
        image = self._cache.get(i)
        if image is None:
            image = self._cache[i] = read_image(self.root / self.records[i].path, self.fmt)
        return image.clone()  # callers may change it in place; the cache must not change

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = self._read(i)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[i]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(r.path for r in self.records)

    def images(self, index: Tensor | Sequence[int]) -> Tensor:
        """The images at ``index`` stacked, without the transform (the evaluation's view)."""
        positions = index.tolist() if isinstance(index, Tensor) else list(index)
        if not positions:
            return torch.empty(0, self.fmt.channels, *self.fmt.size)
        return torch.stack([self._read(i) for i in positions])

    def without_transform(self) -> FolderImages:
        """The same images without augmentation (e.g. the training split for evaluation),
        sharing the decoded-image cache."""
        plain = FolderImages(self.root, self.records, self.classes, self.fmt, cache_bytes=0)
        plain._cache = self._cache
        return plain


def subset(records: Sequence[ImageRecord], max_images: int, seed: int = 0) -> list[ImageRecord]:
    """``records`` in a seeded random order; with ``max_images`` > 0 at most that many,
    round-robin over the classes so a small cap still keeps every class.

    The order matters: TAI callbacks check the first ``budget`` validation samples, and
    files come sorted by class.
    """
    rng = np.random.default_rng(seed)
    shuffled = [records[i] for i in rng.permutation(len(records))]
    if not max_images or len(shuffled) <= max_images:
        return shuffled
    by_class: dict[str, list[ImageRecord]] = {}
    for r in shuffled:
        by_class.setdefault(r.label, []).append(r)
    picked: list[ImageRecord] = []
    while len(picked) < max_images:
        for members in by_class.values():
            if members and len(picked) < max_images:
                picked.append(members.pop())
    return [picked[i] for i in rng.permutation(len(picked))]


@dataclass(frozen=True)
class SplitTensors:
    """A bounded split in memory: images (N, C, H, W) in [0, 1], class indices (N,) and
    each image's path relative to the data root (``<dataset>/<split>/<label>/<file>``)."""

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
    fmt: InputFormat | None = None,
) -> SplitTensors:
    """Read (a bounded subset of) ``records`` into memory, in a seeded random order (see
    :func:`subset`), brought to ``fmt`` (default: the records' own :func:`input_format`)."""
    records = subset(records, max_images, seed)
    fmt = fmt or input_format(root, records, seed=seed)
    data = FolderImages(root, records, classes, fmt, cache_bytes=0)  # read once: no cache
    return SplitTensors(data.images(range(len(records))), data.targets, data.paths)
