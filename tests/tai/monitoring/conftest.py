"""A reference fitted on the synthetic calibrated classifier, shared by the tests."""

from __future__ import annotations

import numpy as np
import pytest

from tai.monitoring.reference import fit_reference
from tests.tai.monitoring.synthetic import GaussianWorld

CLASSES = [f"c{k}" for k in range(10)]


@pytest.fixture(scope="session")
def world() -> GaussianWorld:
    return GaussianWorld.make()


@pytest.fixture(scope="session")
def reference(world):
    rng = np.random.default_rng(100)
    val, train = world.sample(3000, rng), world.sample(3000, rng)
    return fit_reference(
        val.probs,
        val.targets,
        train_embeddings=train.embeddings,
        train_targets=train.targets,
        classes=CLASSES,
        abstention_threshold=0.6,
        train_noise_sigmas=rng.normal(0.02, 0.002, size=400).clip(0),
        n_boot=100,
        max_reference=600,
        seed=0,
    )
