"""Streaming keeps memory bounded: a pass over four times the images does not need more
memory than over one share of them (each measured in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

SIZE = 64
# What holding the extra training images as float tensors would add (the old load_split):
# 1,200 x 3 x 64 x 64 x 4 bytes = 59 MB; streaming must stay well under it.
EXTRA_IMAGES = 1200
ALLOWED_GROWTH_MB = 20

PASS = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from tai.evaluation.inference import stream_outputs
    from tai.modeling.datamodule import FolderDataModule
    from tai.modeling.models import build_model

    torch.set_num_threads(1)
    dm = FolderDataModule(sys.argv[1], "shapes", batch_size=32, image_size=64, augment="crop-flip")
    dm.setup()
    model = build_model("small_cnn", in_channels=3, num_classes=2, image_size=64)
    seen = 0
    for images, _ in dm.train_dataloader():
        model(images).sum().backward()
        seen += len(images)
    logits, _ = stream_outputs(model, dm.train_dataloader().dataset, batch_size=32)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seen": seen, "outputs": len(logits), "peak_mb": peak}))
    """
)


def _write(root: Path, n_train: int) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", n_train), ("val", 4), ("test", 4)):
        for label in ("a", "b"):
            folder = root / "shapes" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count // 2):
                side = int(rng.integers(48, 96))
                pixels = rng.integers(0, 256, (side, side + 7, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def _peak(root: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PASS, str(root)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_times_the_images_do_not_need_more_memory(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    _write(small, EXTRA_IMAGES // 3)
    _write(large, EXTRA_IMAGES // 3 * 4)
    a, b = _peak(small), _peak(large)
    assert (a["seen"], b["seen"]) == (EXTRA_IMAGES // 3, EXTRA_IMAGES // 3 * 4)
    assert b["outputs"] == b["seen"]
    growth = b["peak_mb"] - a["peak_mb"]
    assert growth < ALLOWED_GROWTH_MB, (a, b)
