"""Model-free factors of variation of an image dataset, and their drift between versions.

Data engineering runs before any model exists, so the embedding here is the principal
component analysis of the pixels themselves (:func:`pixel_embeddings`): nothing to download,
nothing to train, deterministic for a seed. Images are turned into float pixels in ``[0, 1]``
(``uint8`` images are divided by 255, float images are taken as they are), flattened and
centred by the per-pixel mean. Pixels are *not* standardised: on datasets such as MNIST the
border pixels are almost constant, and dividing by their tiny standard deviation would make
noise the first principal component.

The PCA is :func:`torch.pca_lowrank` (Halko, Martinsson & Tropp, 2011: randomised range
finder with ``niter`` power iterations), seeded through a forked torch RNG. It costs
``O(N * D * q)`` instead of the ``O(N * D^2)`` of a full SVD, which matters for 60k images
of 784 pixels and more, and agrees with an exact PCA to numerical precision on the leading
components. Component signs are fixed as scikit-learn's ``svd_flip`` does (the largest
absolute loading of every component is positive), so a seed gives one answer.

:func:`factors_of_variation` finds ``n_factors`` directions in any embedding (pixel PCA codes
or a model's penultimate layer): principal components (orthogonal, ordered by explained
variance) or independent components (scikit-learn's ``FastICA``; statistically independent,
not orthogonal, so their explained variances need not add up).

:func:`factor_drift` compares the factor scores of two data versions, factor by factor,
with the two-sample Kolmogorov-Smirnov test and the maximum mean discrepancy (Gretton et
al., "A Kernel Two-Sample Test", JMLR 2012) with a permutation test.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.stats import ks_2samp
from torch import Tensor

__all__ = [
    "FactorDrift",
    "Factors",
    "PixelPCA",
    "factor_drift",
    "factors_of_variation",
    "ordered_samples",
    "pixel_embeddings",
    "traversal",
]

FACTOR_METHODS = ("pca", "ica")

# Oversampling and power iterations of the randomised PCA (Halko et al. recommend p ~ 10).
_OVERSAMPLING = 10
_POWER_ITERATIONS = 4
# Points per side kept by factor_drift, and points used for the median heuristic.
_MAX_DRIFT_SAMPLES = 2000
_MAX_MEDIAN_SAMPLES = 1000


@dataclass(frozen=True)
class PixelPCA:
    """A PCA of flattened pixels.

    Attributes:
        mean: ``(D,)`` per-pixel mean, ``D = C * H * W``.
        components: ``(k, D)`` orthonormal principal axes, largest variance first.
        explained_variance: ``(k,)`` variance of the data along each axis.
        explained_variance_ratio: ``(k,)`` that variance over the total pixel variance.
        image_shape: ``(C, H, W)`` of the images it was fitted on.
    """

    mean: Tensor
    components: Tensor
    explained_variance: Tensor
    explained_variance_ratio: Tensor
    image_shape: tuple[int, int, int]

    def transform(self, images: Tensor) -> Tensor:
        """``(N, k)`` codes of ``(N, C, H, W)`` images: ``(x - mean) @ components.T``."""
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, self.image_shape))}) like "
                f"the images the PCA was fitted on, got {tuple(images.shape)}."
            )
        return (_flat_pixels(images) - self.mean) @ self.components.T

    def inverse_transform(self, codes: Tensor) -> Tensor:
        """``(N, C, H, W)`` images reconstructed from ``(N, k)`` codes."""
        k = self.components.shape[0]
        if codes.ndim != 2 or codes.shape[1] != k:
            raise ValueError(f"codes must have shape (N, {k}), got {tuple(codes.shape)}.")
        flat = codes.to(self.components.dtype) @ self.components + self.mean
        return flat.reshape(-1, *self.image_shape)


@dataclass(frozen=True)
class Factors:
    """Factors of variation of an embedding.

    Attributes:
        method: ``"pca"`` or ``"ica"``.
        mean: ``(D,)`` mean of the embeddings.
        components: ``(n_factors, D)`` direction of each factor in the embedding space
            (unmixing rows for ICA: ``scores = (x - mean) @ components.T``).
        scores: ``(N, n_factors)`` score of every sample on every factor.
        explained_variance_ratio: ``(n_factors,)`` share of the total variance each factor
            reconstructs on its own (for PCA these add up to the share of all ``n_factors``;
            ICA factors are not orthogonal, so theirs need not).
    """

    method: str
    mean: Tensor
    components: Tensor
    scores: Tensor
    explained_variance_ratio: Tensor

    def transform(self, embeddings: Tensor) -> Tensor:
        """``(N, n_factors)`` scores of new ``(N, D)`` embeddings on these factors:
        ``(x - mean) @ components.T`` (the same projection that made :attr:`scores`)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"embeddings must have shape (N, {self.mean.shape[0]}) like those the factors "
                f"were fitted on, got {tuple(embeddings.shape)}."
            )
        return (embeddings.to(self.mean.dtype) - self.mean) @ self.components.T


@dataclass(frozen=True)
class FactorDrift:
    """Drift of one factor between two samples.

    Attributes:
        factor: index of the factor (column of the scores).
        ks_statistic: two-sample Kolmogorov-Smirnov statistic, in ``[0, 1]``.
        ks_pvalue: its p-value (scipy's ``ks_2samp``, two-sided).
        mmd2: squared maximum mean discrepancy (biased V-statistic) with an RBF kernel.
        mmd_pvalue: permutation p-value of ``mmd2``, ``(1 + #{perm >= observed}) / (1 + P)``.
        bandwidth: RBF bandwidth ``sigma`` used (median pairwise distance of the pooled
            sample).
        n_a: points of the first sample used (after subsampling).
        n_b: points of the second sample used.
    """

    factor: int
    ks_statistic: float
    ks_pvalue: float
    mmd2: float
    mmd_pvalue: float
    bandwidth: float
    n_a: int
    n_b: int


def pixel_embeddings(images: Tensor, *, n_components: int = 32, seed: int = 0) -> PixelPCA:
    """Fit a PCA on the flattened, mean-centred pixels of ``images``.

    Args:
        images: ``(N, C, H, W)`` images, ``uint8`` in ``[0, 255]`` or float in ``[0, 1]``.
        n_components: principal components kept, in ``[1, min(N, C * H * W)]``.
        seed: seed of the randomised range finder.

    Returns:
        :class:`PixelPCA` with ``n_components`` components.

    Raises:
        ValueError: on a non-4-D or empty batch, fewer than 2 images, non-finite pixels or
            ``n_components`` out of range.

    Example:
        >>> x = torch.zeros(4, 1, 1, 2)
        >>> x[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0])
        >>> pca = pixel_embeddings(x, n_components=1)
        >>> pca.components.tolist(), pca.explained_variance_ratio.tolist()
        ([[1.0, 0.0]], [1.0])
    """
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(
            f"images must be a batch of at least 2 images of shape (N, C, H, W), "
            f"got shape {tuple(images.shape)}."
        )
    pixels = _flat_pixels(images)
    if not torch.isfinite(pixels).all():
        raise ValueError("images contain NaN or infinite values; fix the data first.")
    n, d = pixels.shape
    if not 1 <= n_components <= min(n, d):
        raise ValueError(
            f"n_components must be in [1, min(N, C*H*W)] = [1, {min(n, d)}], got {n_components}."
        )
    mean = pixels.mean(dim=0)
    q = min(n_components + _OVERSAMPLING, n, d)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, singular, v = torch.pca_lowrank(pixels, q=q, center=True, niter=_POWER_ITERATIONS)
    components = _flip_signs(v[:, :n_components].T.contiguous())
    variance = singular[:n_components].square() / (n - 1)
    total = pixels.var(dim=0).sum()
    ratio = variance / total if total > 0 else torch.zeros_like(variance)
    return PixelPCA(
        mean=mean,
        components=components,
        explained_variance=variance,
        explained_variance_ratio=ratio,
        image_shape=tuple(int(s) for s in images.shape[1:]),
    )


def factors_of_variation(
    embeddings: Tensor,
    *,
    n_factors: int = 8,
    method: Literal["pca", "ica"] = "pca",
    seed: int = 0,
) -> Factors:
    """``n_factors`` factors of variation of ``embeddings`` by PCA or FastICA.

    PCA is an exact SVD of the centred embeddings (``D`` is an embedding size, small).
    ICA is scikit-learn's ``FastICA`` (``whiten="unit-variance"``, seeded); the explained
    variance of ICA factor ``j`` is the variance of its rank-one reconstruction
    ``scores[:, j] outer mixing[:, j]`` over the total variance.

    Args:
        embeddings: ``(N, D)`` float tensor.
        n_factors: factors to extract, in ``[1, min(N, D)]``.
        method: ``"pca"`` or ``"ica"``.
        seed: random state of FastICA (PCA is deterministic).

    Returns:
        :class:`Factors` with ``(N, n_factors)`` scores.

    Raises:
        ValueError: on wrong shapes, fewer than 2 samples, non-finite values, an unknown
            ``method`` or ``n_factors`` out of range.
    """
    if method not in FACTOR_METHODS:
        raise ValueError(f"method must be one of {FACTOR_METHODS}, got {method!r}.")
    x = _check_embeddings(embeddings)
    n, d = x.shape
    if not 1 <= n_factors <= min(n, d):
        raise ValueError(
            f"n_factors must be in [1, min(N, D)] = [1, {min(n, d)}], got {n_factors}."
        )
    mean = x.mean(dim=0)
    centred = x - mean
    total = centred.square().sum() / (n - 1)
    if method == "pca":
        _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
        components = _flip_signs(vh[:n_factors])
        scores = centred @ components.T
        explained = singular[:n_factors].square() / (n - 1)
    else:
        components, scores, explained = _fast_ica(centred, n_factors, seed)
    ratio = explained / total if total > 0 else torch.zeros_like(explained)
    return Factors(
        method=method,
        mean=mean,
        components=components,
        scores=scores,
        explained_variance_ratio=ratio,
    )


def traversal(pca: PixelPCA, factor: int, *, steps: int = 7, span: float = 2.0) -> Tensor:
    """Images along one principal axis: ``mean + t * sd * component`` for ``t`` in
    ``linspace(-span, span, steps)``, ``sd`` the standard deviation along the axis.

    Args:
        pca: a fitted :class:`PixelPCA`.
        factor: index of the component, in ``[0, k)``.
        steps: number of images, at least 2.
        span: how many standard deviations each side of the mean, positive.

    Returns:
        ``(steps, C, H, W)`` reconstructions (not clipped to ``[0, 1]``).

    Raises:
        ValueError: on ``factor`` out of range, ``steps < 2`` or ``span <= 0``.
    """
    k = pca.components.shape[0]
    if not 0 <= factor < k:
        raise ValueError(f"factor must be in [0, {k}) for a PCA with {k} components, got {factor}.")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}.")
    if not span > 0:
        raise ValueError(f"span must be positive, got {span}.")
    t = torch.linspace(-span, span, steps, dtype=pca.components.dtype)
    sd = pca.explained_variance[factor].sqrt()
    codes = torch.zeros(steps, k, dtype=pca.components.dtype)
    codes[:, factor] = t * sd
    return pca.inverse_transform(codes)


def ordered_samples(scores: Tensor, factor: int, k: int) -> list[int]:
    """Indices of ``k`` samples spread evenly along one factor, lowest score first.

    The samples sit at the evenly spaced ranks ``round(linspace(0, N - 1, k))`` of the
    factor's scores, so the first is the sample with the lowest score, the last the one
    with the highest, and the rest are quantiles in between.

    Args:
        scores: ``(N, n_factors)`` factor scores.
        factor: column of ``scores``.
        k: number of samples, in ``[1, N]``.

    Returns:
        ``k`` distinct indices into ``scores``.

    Raises:
        ValueError: on a non-2-D ``scores``, ``factor`` or ``k`` out of range.

    Example:
        >>> ordered_samples(torch.tensor([[3.0], [0.0], [2.0], [1.0], [4.0]]), 0, 3)
        [1, 2, 4]
    """
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must have shape (N, n_factors), got {tuple(scores.shape)}.")
    n, n_factors = scores.shape
    if not 0 <= factor < n_factors:
        raise ValueError(f"factor must be in [0, {n_factors}), got {factor}.")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N] = [1, {n}], got {k}.")
    order = torch.argsort(scores[:, factor], stable=True)
    ranks = torch.round(torch.linspace(0, n - 1, k, dtype=torch.float64)).long()
    return order[ranks].tolist()


def factor_drift(
    scores_a: Tensor,
    scores_b: Tensor,
    *,
    n_permutations: int = 200,
    seed: int = 0,
    max_samples: int = _MAX_DRIFT_SAMPLES,
) -> list[FactorDrift]:
    """Per-factor drift between two samples of factor scores (KS test and MMD).

    Each side is first subsampled (seeded, without replacement) to at most ``max_samples``
    points, which bounds the cost at ``O(n_permutations * (2 * max_samples)^2)`` per factor.
    For factor ``j`` the pooled 1-D scores get an RBF kernel
    ``k(x, y) = exp(-(x - y)^2 / (2 sigma^2))`` with ``sigma`` the median pairwise distance
    (of at most 1000 pooled points), and

        MMD^2 = mean K_aa + mean K_bb - 2 mean K_ab

    (the biased V-statistic, Gretton et al. 2012, eq. 5). Its p-value comes from
    ``n_permutations`` random relabellings of the pooled points.

    Args:
        scores_a: ``(N_a, n_factors)`` scores of the reference sample (e.g. the previous
            data commit), both projected with the *same* factors.
        scores_b: ``(N_b, n_factors)`` scores of the new sample.
        n_permutations: permutations of the MMD test, at least 1.
        seed: seed of the subsampling and the permutations.
        max_samples: most points kept per side, at least 2.

    Returns:
        One :class:`FactorDrift` per factor, in factor order.

    Raises:
        ValueError: on wrong shapes, different factor counts, fewer than 2 points per
            side, non-finite scores, ``n_permutations < 1`` or ``max_samples < 2``.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}.")
    if max_samples < 2:
        raise ValueError(f"max_samples must be at least 2, got {max_samples}.")
    for name, scores in (("scores_a", scores_a), ("scores_b", scores_b)):
        if scores.ndim != 2 or scores.shape[0] < 2:
            raise ValueError(
                f"{name} must have shape (N, n_factors) with N >= 2, got {tuple(scores.shape)}."
            )
        if not torch.isfinite(scores).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
    if scores_a.shape[1] != scores_b.shape[1]:
        raise ValueError(
            f"scores_a and scores_b must have the same number of factors, got "
            f"{scores_a.shape[1]} and {scores_b.shape[1]}."
        )
    generator = torch.Generator().manual_seed(seed)
    a = _subsample(scores_a.detach().double().cpu(), max_samples, generator)
    b = _subsample(scores_b.detach().double().cpu(), max_samples, generator)
    drifts = []
    for j in range(a.shape[1]):
        ks = ks_2samp(a[:, j].numpy(), b[:, j].numpy())
        mmd2, p_value, sigma = _mmd_permutation_test(a[:, j], b[:, j], n_permutations, generator)
        drifts.append(
            FactorDrift(
                factor=j,
                ks_statistic=float(ks.statistic),
                ks_pvalue=float(ks.pvalue),
                mmd2=mmd2,
                mmd_pvalue=p_value,
                bandwidth=sigma,
                n_a=a.shape[0],
                n_b=b.shape[0],
            )
        )
    return drifts


def _flat_pixels(images: Tensor) -> Tensor:
    x = images.detach()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x.reshape(x.shape[0], -1)


def _check_embeddings(embeddings: Tensor) -> Tensor:
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(
            f"embeddings must have shape (N, D) with N >= 2, got {tuple(embeddings.shape)}."
        )
    x = embeddings.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values; fix the embedding first.")
    return x


def _flip_signs(components: Tensor) -> Tensor:
    """Make the largest absolute loading of every row positive (scikit-learn's svd_flip)."""
    biggest = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(components.shape[0]), biggest])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def _fast_ica(centred: Tensor, n_factors: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    from sklearn.decomposition import FastICA

    ica = FastICA(n_components=n_factors, whiten="unit-variance", random_state=seed, max_iter=500)
    scores = ica.fit_transform(centred.numpy().astype(np.float64))
    mixing = ica.mixing_  # (D, n_factors)
    # Variance of each rank-one reconstruction: var(s_j) * ||a_j||^2.
    explained = scores.var(axis=0, ddof=1) * np.square(mixing).sum(axis=0)
    unmixing = ica.components_  # (n_factors, D), scores = (x - mean) @ unmixing.T
    return (
        torch.from_numpy(unmixing).float(),
        torch.from_numpy(scores).float(),
        torch.from_numpy(explained).float(),
    )


def _subsample(x: Tensor, max_samples: int, generator: torch.Generator) -> Tensor:
    if x.shape[0] <= max_samples:
        return x
    return x[torch.randperm(x.shape[0], generator=generator)[:max_samples]]


def _median_distance(x: Tensor, generator: torch.Generator) -> float:
    """Median of the pairwise distances between distinct points (1.0 if all coincide)."""
    x = _subsample(x, _MAX_MEDIAN_SAMPLES, generator)
    x = x.reshape(x.shape[0], -1)
    distances = torch.cdist(x, x)
    upper = distances[torch.triu_indices(len(x), len(x), offset=1).unbind()]
    median = float(torch.quantile(upper, 0.5)) if upper.numel() else 0.0
    if median > 0:
        return median
    positive = upper[upper > 0]
    return float(torch.quantile(positive, 0.5)) if positive.numel() else 1.0


def _mmd_permutation_test(
    a: Tensor, b: Tensor, n_permutations: int, generator: torch.Generator
) -> tuple[float, float, float]:
    pooled = torch.cat([a, b])
    sigma = _median_distance(pooled, generator)
    # float32 halves memory and time; MMD^2 values are far above its rounding error.
    column = pooled.float()
    kernel = torch.exp((column[:, None] - column[None, :]).square_().mul_(-0.5 / sigma**2))
    n_a, n = len(a), len(pooled)

    def weights(first: Tensor) -> Tensor:
        # MMD^2 = w^T K w with w = 1/n_a on the first sample and -1/n_b on the second.
        w = torch.full((first.shape[0], n), -1.0 / (n - n_a), dtype=kernel.dtype)
        return w.scatter_(1, first, 1.0 / n_a)

    observed = weights(torch.arange(n_a)[None])
    mmd2 = float((observed @ kernel * observed).sum())
    firsts = torch.stack(
        [torch.randperm(n, generator=generator)[:n_a] for _ in range(n_permutations)]
    )
    permuted = weights(firsts)
    null = (permuted @ kernel * permuted).sum(dim=1)
    p_value = (1 + int((null >= mmd2 - 1e-12).sum())) / (1 + n_permutations)
    return mmd2, p_value, sigma
