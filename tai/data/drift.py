"""How the data changed between two data commits: noise, label noise, factors of variation.

Data engineering compares the data card of the commit a model is trained on with the
card of a *baseline* commit (the current champion's data, or the previous commit of the
branch), so that a gate can stop a model trained on data that changed in a way nobody
asked for.

- Noise: the shift of the median per-image noise level (wavelet estimator, see
  :func:`tai.data.profile.estimate_noise_sigma`), overall and per split and class, and
  the change of the confident-learning label-issue rate (:mod:`tai.data.label_noise`).
- Factors of variation: a pixel PCA (:func:`tai.data.factors.pixel_embeddings`) is fitted on
  the training images of *both* commits pooled, each commit's images are projected onto
  its top factors, and each factor gets a two-sample test (:func:`tai.data.factors.factor_drift`:
  Kolmogorov-Smirnov and an RBF-kernel MMD with a permutation p-value, Gretton et al.
  2012). A factor *drifted* when its MMD p-value is below ``alpha / n_factors``
  (Bonferroni over the factors). No standard algorithm exists for "drift of factors of
  variation". Fitting on the pooled images treats both commits alike: a PCA fitted on
  the baseline alone overfits its noise directions (its own images have more variance
  along them than any new sample), so identical distributions would test as drifted;
  and a new mode of variation in the new commit becomes a pooled factor on which the
  two commits differ.

The gateable numbers are :data:`tai.data.checks.DATA_DRIFT`; they are NaN when there is no
baseline (the first data commit), and the pipeline then skips their gates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tai.data.checks import DATA_DRIFT
from tai.data.factors import FactorDrift, factor_drift, pixel_embeddings

DRIFT_METRIC_NAMES = DATA_DRIFT.metric_names


@dataclass(frozen=True)
class NoiseShift:
    """Noise-level change from a baseline card to a new one.

    Attributes:
        overall_median_a: median per-image sigma of the baseline.
        overall_median_b: median per-image sigma of the new commit.
        per_split_class: split -> label -> median sigma of new minus baseline, for the
            (split, label) cells both cards have.
        label_issue_rate_a: label-issue rate of the baseline (None when not estimated).
        label_issue_rate_b: label-issue rate of the new commit (None when not estimated).
    """

    overall_median_a: float
    overall_median_b: float
    per_split_class: dict[str, dict[str, float]]
    label_issue_rate_a: float | None
    label_issue_rate_b: float | None

    @property
    def sigma_shift(self) -> float:
        """Absolute shift of the overall median noise level (in [0, 1] pixel units)."""
        return abs(self.overall_median_b - self.overall_median_a)

    @property
    def label_issue_rate_shift(self) -> float:
        """New minus baseline label-issue rate; NaN when either was not estimated."""
        if self.label_issue_rate_a is None or self.label_issue_rate_b is None:
            return math.nan
        return self.label_issue_rate_b - self.label_issue_rate_a


def noise_shift(card_a: dict, card_b: dict) -> NoiseShift:
    """Compare the noise profiles and label-noise estimates of two data cards.

    Args:
        card_a: the baseline's card (:func:`tai.data.card.build_data_card`).
        card_b: the new commit's card.

    Raises:
        ValueError: a card has no ``noise_profile`` (not a data card).
    """
    for name, card in (("card_a", card_a), ("card_b", card_b)):
        if "noise_profile" not in card:
            raise ValueError(f"{name} has no `noise_profile`; pass a card from build_data_card")
    a, b = card_a["noise_profile"], card_b["noise_profile"]
    cells: dict[str, dict[str, float]] = {}
    for split, labels in b["per_split_class"].items():
        for label, stats in labels.items():
            base = a["per_split_class"].get(split, {}).get(label)
            if base is not None:
                cells.setdefault(split, {})[label] = stats["median"] - base["median"]
    return NoiseShift(
        overall_median_a=float(a["overall_median"]),
        overall_median_b=float(b["overall_median"]),
        per_split_class=cells,
        label_issue_rate_a=card_a.get("label_noise", {}).get("issue_rate"),
        label_issue_rate_b=card_b.get("label_noise", {}).get("issue_rate"),
    )


@dataclass(frozen=True)
class DataDrift:
    """Noise shift and factor drift of a new commit against a baseline commit."""

    baseline_commit: str
    noise: NoiseShift
    factors: list[FactorDrift]
    explained_variance_ratio: list[float]
    alpha: float

    @property
    def drifted_factors(self) -> list[int]:
        """Factors whose MMD p-value is below ``alpha / n_factors`` (Bonferroni)."""
        level = self.alpha / max(len(self.factors), 1)
        return [f.factor for f in self.factors if f.mmd_pvalue < level]

    def metrics(self) -> dict[str, float]:
        """The gateable numbers, named as in :data:`tai.data.checks.DATA_DRIFT`."""
        return {
            "data_noise_sigma_shift": self.noise.sigma_shift,
            "data_label_issue_rate_shift": self.noise.label_issue_rate_shift,
            "data_factor_drift_max_ks": max((f.ks_statistic for f in self.factors), default=0.0),
            "data_drifted_factors": float(len(self.drifted_factors)),
        }

    def as_dict(self) -> dict:
        """JSON-ready, for the data card."""
        return {
            "baseline_commit": self.baseline_commit,
            "alpha": self.alpha,
            "noise": {
                "overall_median_baseline": self.noise.overall_median_a,
                "overall_median": self.noise.overall_median_b,
                "median_shift_per_split_class": self.noise.per_split_class,
                "label_issue_rate_baseline": self.noise.label_issue_rate_a,
                "label_issue_rate": self.noise.label_issue_rate_b,
            },
            "factors": [
                {
                    "factor": f.factor,
                    "explained_variance_ratio": ev,
                    "ks_statistic": f.ks_statistic,
                    "ks_pvalue": f.ks_pvalue,
                    "mmd2": f.mmd2,
                    "mmd_pvalue": f.mmd_pvalue,
                    "drifted": f.factor in self.drifted_factors,
                }
                for f, ev in zip(self.factors, self.explained_variance_ratio, strict=True)
            ],
            "metrics": self.metrics(),
        }


def data_drift(
    baseline_commit: str,
    card_a: dict,
    card_b: dict,
    images_a: Tensor,
    images_b: Tensor,
    *,
    n_factors: int = 8,
    n_components: int = 32,
    alpha: float = 0.05,
    n_permutations: int = 200,
    max_samples: int = 500,
    seed: int = 0,
) -> DataDrift:
    """Noise shift and per-factor drift of ``images_b`` against the baseline ``images_a``.

    Args:
        baseline_commit: the baseline's commit id (recorded in the result).
        card_a: the baseline's data card.
        card_b: the new commit's data card.
        images_a: ``(N_a, C, H, W)`` training images of the baseline, in [0, 1].
        images_b: ``(N_b, C, H, W)`` training images of the new commit, same C, H, W.
        n_factors: top pixel-PCA factors tested.
        n_components: PCA components fitted (at least ``n_factors``).
        alpha: family-wise level of the drift tests, in (0, 1).
        n_permutations: permutations of each MMD test.
        max_samples: most images per side in each test (bounds the cost).
        seed: seeds the subsampling and the permutations.

    Raises:
        ValueError: ``alpha`` outside (0, 1), image shapes that differ between the
            commits, or fewer than 3 images on a side.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if images_a.shape[1:] != images_b.shape[1:]:
        raise ValueError(
            f"the commits' images differ in shape: {tuple(images_a.shape[1:])} (baseline) vs "
            f"{tuple(images_b.shape[1:])}; factor drift needs images of the same size"
        )
    if min(len(images_a), len(images_b)) < 3:
        raise ValueError(
            f"factor drift needs at least 3 images per commit, got {len(images_a)} (baseline) "
            f"and {len(images_b)}"
        )
    pooled = torch.cat([images_a, images_b])
    pixels = int(torch.tensor(pooled.shape[1:]).prod())
    components = min(n_components, len(pooled) - 1, pixels)
    pca = pixel_embeddings(pooled, n_components=components, seed=seed)
    k = min(n_factors, pca.components.shape[0])
    scores_a = pca.transform(images_a)[:, :k]
    scores_b = pca.transform(images_b)[:, :k]
    drifts = factor_drift(
        scores_a, scores_b, n_permutations=n_permutations, seed=seed, max_samples=max_samples
    )
    return DataDrift(
        baseline_commit=baseline_commit,
        noise=noise_shift(card_a, card_b),
        factors=drifts,
        explained_variance_ratio=[float(v) for v in pca.explained_variance_ratio[:k]],
        alpha=alpha,
    )
