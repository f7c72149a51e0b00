"""The monitoring fit (reference and detector self-test) holds one batch of images at a time."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from flows.tasks.monitoring import SELFTEST_SHIFTS, fit_monitoring
from tai.check import Stage
from tai.data.images import FolderImages
from tai.evaluation.registry import CheckOptions, metric_specs
from tai.gates.policy import parse_policy
from tai.modeling.datamodule import FolderDataModule
from tai.modeling.models import build_model
from tests.conftest import write_tiny_dataset

POLICY = """
version: 1
gates:
  - metric: accuracy
    min: 0.0
monitoring:
  - metric: estimated_accuracy
    min: 0.5
"""


def test_the_self_test_reads_corrupts_and_classifies_at_most_a_batch_at_a_time(
    tmp_path, monkeypatch
):
    """At 224x224 the self-test's 1,000 test images and each corrupted copy were held at
    once and classified 256 at a time (gigabytes, whatever TAI_BATCH_SIZE said)."""
    write_tiny_dataset(tmp_path, counts={"train": 30, "val": 20, "test": 30}, size=16)
    data = FolderDataModule(tmp_path, "tiny", batch_size=8)
    data.setup()
    model = build_model("small_cnn", in_channels=1, num_classes=3, seed=0).eval()
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    passes: list[int] = []
    first_conv.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    reads: list[int] = []
    real_images = FolderImages.images
    monkeypatch.setattr(
        FolderImages,
        "images",
        lambda self, index: reads.append(len(index)) or real_images(self, index),
    )
    specs = metric_specs(CheckOptions(), stages=(Stage.MONITORING,))
    policy = parse_policy(POLICY, metric_specs(CheckOptions()), monitoring_specs=specs)

    fit = fit_monitoring.fn(
        SimpleNamespace(data=data),
        SimpleNamespace(model=model, abstention_threshold=0.5),
        None,
        policy,
    )

    assert passes and max(passes) <= 8, sorted(set(passes))
    assert reads and max(reads) <= 8, sorted(set(reads))
    assert fit.selftest is not None
    shifted = fit.selftest.as_dict()["detection_by_shift"]
    assert sorted(shifted) == sorted(f"{n} s{s}" for n, s in SELFTEST_SHIFTS)
    # The 90 test images went through each of the three corruptions, in batches of 8.
    assert sum(passes) >= 3 * 90
    assert len(fit.reference.noise_sigmas) == 30 * 3  # every training image (fewer than 300)
    assert np.isfinite(fit.reference.noise_sigmas).all()
