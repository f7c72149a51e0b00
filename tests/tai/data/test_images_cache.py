"""FolderImages keeps decoded images of a split that fits its memory bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tai.data import images as images_module
from tai.data.images import FolderImages, InputFormat
from tai.data.profile import scan_dataset


def _folder(root: Path, n: int = 4) -> list:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "toy" / "train" / str(i % 2)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    return scan_dataset(root, "toy")


def _counting_reads(monkeypatch) -> list[Path]:
    reads: list[Path] = []
    real = images_module.read_image

    def counted(path, fmt):
        reads.append(path)
        return real(path, fmt)

    monkeypatch.setattr(images_module, "read_image", counted)
    return reads


def test_a_split_that_fits_is_decoded_once_and_shared_with_its_plain_copy(tmp_path, monkeypatch):
    records = _folder(tmp_path)
    reads = _counting_reads(monkeypatch)
    data = FolderImages(tmp_path, records, ["0", "1"], InputFormat(1, (8, 8), {}, {}))

    first = [data[i][0] for i in range(4)]
    again = data.without_transform().images(range(4))

    assert len(reads) == 4
    torch.testing.assert_close(torch.stack(first), again, atol=0, rtol=0)
    first[0].fill_(7.0)  # a caller changing its copy in place leaves the cache alone
    assert data[0][0].max() <= 1.0


def test_a_split_over_the_bound_is_read_from_disk_every_time(tmp_path, monkeypatch):
    records = _folder(tmp_path)
    reads = _counting_reads(monkeypatch)
    fmt = InputFormat(1, (8, 8), {}, {})
    data = FolderImages(tmp_path, records, ["0", "1"], fmt, cache_bytes=4 * 64 * 4 - 1)

    for _ in range(2):
        [data[i] for i in range(4)]

    assert len(reads) == 8
