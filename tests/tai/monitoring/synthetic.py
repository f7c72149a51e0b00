"""A synthetic classifier whose probabilities are calibrated by construction.

Images are points ``x = mu_y + sigma * eps`` of ``dim`` dimensions around ``n_classes``
class means (Gaussian mixture); the "model" is the Bayes posterior under the training
priors, ``softmax(-|x - mu_k|^2 / (2 sigma^2) + log prior_k)``, so its probabilities are
calibrated on data drawn like the training data, and ``x`` itself is the penultimate
embedding (the logits are linear in it). A batch can be drawn with

- other class proportions (``priors``): a pure prior (label) shift, the posterior no
  longer calibrated for it;
- more noise (``noise_scale > 1``): a covariate shift that makes the model overconfident;
- an offset of every point (``offset``): a covariate shift towards some classes;
- class means pulled towards the origin (``signal_scale < 1``): less contrast;
- a share of images much noisier than the rest (``hard_fraction``, ``hard_noise``): a
  corrupted sub-population.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax


@dataclass(frozen=True)
class Batch:
    probs: np.ndarray
    embeddings: np.ndarray
    targets: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.probs.argmax(1) == self.targets))


@dataclass(frozen=True)
class GaussianWorld:
    means: np.ndarray  # (K, D)
    sigma: float
    priors: np.ndarray  # (K,) training priors

    @classmethod
    def make(
        cls,
        n_classes: int = 10,
        dim: int = 16,
        *,
        separation: float = 5.0,
        priors: np.ndarray | None = None,
        seed: int = 0,
    ) -> GaussianWorld:
        rng = np.random.default_rng(seed)
        means = rng.normal(size=(n_classes, dim)) * separation / np.sqrt(2 * dim)
        p = np.full(n_classes, 1 / n_classes) if priors is None else np.asarray(priors, float)
        return cls(means, 1.0, p / p.sum())

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.priors)

    def posterior(self, x: np.ndarray) -> np.ndarray:
        d2 = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        return np.exp(log_softmax(-d2 / (2 * self.sigma**2) + np.log(self.priors), axis=1))

    def sample(
        self,
        n: int,
        rng: np.random.Generator,
        *,
        priors: np.ndarray | None = None,
        noise_scale: float = 1.0,
        offset: np.ndarray | None = None,
        signal_scale: float = 1.0,
        hard_fraction: float = 0.0,
        hard_noise: float = 3.0,
    ) -> Batch:
        p = self.priors if priors is None else np.asarray(priors, float) / np.sum(priors)
        y = rng.choice(self.n_classes, size=n, p=p)
        scale = np.full(n, noise_scale * self.sigma)
        scale[rng.random(n) < hard_fraction] = hard_noise * self.sigma
        x = signal_scale * self.means[y] + scale[:, None] * rng.normal(size=(n, self.dim))
        if offset is not None:
            x = x + offset
        return Batch(self.posterior(x), x, y)
