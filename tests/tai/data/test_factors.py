import doctest

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from tai.data.factors import (
    FactorDrift,
    Factors,
    PixelPCA,
    factor_drift,
    factors_of_variation,
    ordered_samples,
    pixel_embeddings,
    traversal,
)
from tai.report.figures.canvas import min_max
from tai.report.figures.data import (
    explained_variance_figure,
    factor_traversal_figure,
    traversal_strip,
)


def _low_rank_images(n: int = 300, rank: int = 5, seed: int = 0) -> torch.Tensor:
    """Images of 1x8x8 pixels = a mean image + ``rank`` patterns with decaying scales + noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(rank, 64, generator=g)
    scales = torch.tensor([2.0**-i for i in range(rank)])
    codes = torch.randn(n, rank, generator=g) * scales
    flat = 0.5 + 0.1 * codes @ patterns + 0.001 * torch.randn(n, 64, generator=g)
    return flat.reshape(n, 1, 8, 8)


# --- pixel PCA --------------------------------------------------------------------------


def test_pixel_pca_matches_scikit_learn_pca():
    images = _low_rank_images()

    pca = pixel_embeddings(images, n_components=4)

    reference = PCA(n_components=4, svd_solver="full").fit(images.reshape(300, -1).numpy())
    assert isinstance(pca, PixelPCA)
    np.testing.assert_allclose(
        pca.explained_variance_ratio.numpy(), reference.explained_variance_ratio_, rtol=1e-3
    )
    np.testing.assert_allclose(
        pca.explained_variance.numpy(), reference.explained_variance_, rtol=1e-3
    )
    # Same axes, same signs (both flip so that the largest loading is positive).
    np.testing.assert_allclose(pca.components.numpy(), reference.components_, atol=1e-3)
    np.testing.assert_allclose(
        pca.transform(images).numpy(),
        reference.transform(images.reshape(300, -1).numpy()),
        atol=1e-3,
    )


def test_inverse_transform_reconstructs_images_of_the_fitted_rank():
    images = _low_rank_images()

    pca = pixel_embeddings(images, n_components=5)

    reconstructed = pca.inverse_transform(pca.transform(images))
    assert reconstructed.shape == images.shape
    assert float((reconstructed - images).abs().max()) < 0.01  # only the noise is lost


def test_uint8_images_are_scaled_to_unit_range():
    images = _low_rank_images()
    as_bytes = (images.clamp(0, 1) * 255).round().to(torch.uint8)

    pca = pixel_embeddings(as_bytes, n_components=3)

    torch.testing.assert_close(pca.mean, as_bytes.float().reshape(300, -1).mean(0) / 255)


def test_pixel_pca_is_reproducible_for_a_seed():
    images = _low_rank_images()

    first = pixel_embeddings(images, n_components=3, seed=7)
    second = pixel_embeddings(images, n_components=3, seed=7)

    torch.testing.assert_close(first.components, second.components)


@pytest.mark.parametrize(
    ("images", "kwargs", "message"),
    [
        (torch.rand(1, 1, 4, 4), {}, r"at least 2 images of shape \(N, C, H, W\)"),
        (torch.rand(5, 16), {}, r"at least 2 images"),
        (
            torch.rand(5, 1, 2, 2),
            {"n_components": 5},
            r"n_components must be in \[1, .* 4\], got 5",
        ),
        (torch.rand(5, 1, 2, 2), {"n_components": 0}, r"n_components must be in .* got 0"),
        (torch.full((3, 1, 2, 2), float("nan")), {"n_components": 1}, "NaN or infinite"),
    ],
)
def test_pixel_embeddings_rejects_bad_input(images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pixel_embeddings(images, **kwargs)


def test_transform_and_inverse_reject_other_shapes():
    pca = pixel_embeddings(_low_rank_images(), n_components=3)

    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 8, 8\)"):
        pca.transform(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"codes must have shape \(N, 3\)"):
        pca.inverse_transform(torch.rand(2, 4))


# --- factors of variation ---------------------------------------------------------------


def test_pca_factors_match_scikit_learn():
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(200, 6, generator=g) * torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])

    factors = factors_of_variation(embeddings, n_factors=3)

    reference = PCA(n_components=3).fit(embeddings.numpy())
    assert isinstance(factors, Factors) and factors.method == "pca"
    assert factors.scores.shape == (200, 3)
    np.testing.assert_allclose(
        factors.explained_variance_ratio.numpy(), reference.explained_variance_ratio_, rtol=1e-4
    )
    np.testing.assert_allclose(
        factors.scores.numpy(), reference.transform(embeddings.numpy()), atol=1e-4
    )


def test_ica_factors_recover_independent_sources():
    g = torch.Generator().manual_seed(1)
    sources = torch.rand(2000, 2, generator=g) * 2 - 1  # two independent uniform sources
    mixing = torch.tensor([[1.0, 0.5, 0.2], [0.3, 1.0, -0.4]])
    embeddings = sources @ mixing

    factors = factors_of_variation(embeddings, n_factors=2, method="ica", seed=0)

    correlation = np.corrcoef(factors.scores.T.numpy(), sources.T.numpy())[:2, 2:]
    assert np.all(np.abs(correlation).max(axis=1) > 0.99)  # each factor is one source
    assert factors.components.shape == (2, 3)
    assert torch.all(factors.explained_variance_ratio > 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "nmf"}, r"method must be one of \('pca', 'ica'\), got 'nmf'"),
        ({"n_factors": 0}, r"n_factors must be in \[1, min\(N, D\)\] = \[1, 4\], got 0"),
        ({"n_factors": 5}, r"n_factors must be in .* got 5"),
    ],
)
def test_factors_reject_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        factors_of_variation(torch.randn(10, 4), **kwargs)


def test_factors_reject_bad_embeddings():
    with pytest.raises(ValueError, match=r"embeddings must have shape \(N, D\) with N >= 2"):
        factors_of_variation(torch.randn(10))
    with pytest.raises(ValueError, match="NaN or infinite"):
        factors_of_variation(torch.full((3, 2), float("inf")))


# --- traversal and ordering -------------------------------------------------------------


def test_traversal_walks_mean_plus_minus_span_standard_deviations():
    pca = pixel_embeddings(_low_rank_images(), n_components=3)

    images = traversal(pca, 1, steps=5, span=2.0)

    assert images.shape == (5, 1, 8, 8)
    mean = pca.mean.reshape(1, 8, 8)
    step = (pca.explained_variance[1].sqrt() * pca.components[1]).reshape(1, 8, 8)
    torch.testing.assert_close(images[2], mean)
    torch.testing.assert_close(images[0], mean - 2 * step)
    torch.testing.assert_close(images[4], mean + 2 * step)


@pytest.mark.parametrize(
    ("factor", "kwargs", "message"),
    [
        (3, {}, r"factor must be in \[0, 3\) for a PCA with 3 components, got 3"),
        (0, {"steps": 1}, "steps must be at least 2, got 1"),
        (0, {"span": 0.0}, "span must be positive, got 0.0"),
    ],
)
def test_traversal_rejects_bad_arguments(factor, kwargs, message):
    pca = pixel_embeddings(_low_rank_images(), n_components=3)
    with pytest.raises(ValueError, match=message):
        traversal(pca, factor, **kwargs)


def test_ordered_samples_spread_from_lowest_to_highest():
    scores = torch.tensor([[5.0, 0.0], [1.0, 0.0], [3.0, 0.0], [2.0, 0.0], [4.0, 0.0]])

    assert ordered_samples(scores, 0, 5) == [1, 3, 2, 4, 0]
    assert ordered_samples(scores, 0, 3) == [1, 2, 0]
    assert ordered_samples(scores, 0, 1) == [1]


@pytest.mark.parametrize(
    ("scores", "factor", "k", "message"),
    [
        (torch.rand(5), 0, 1, r"scores must have shape \(N, n_factors\)"),
        (torch.rand(5, 2), 2, 1, r"factor must be in \[0, 2\), got 2"),
        (torch.rand(5, 2), 0, 6, r"k must be in \[1, N\] = \[1, 5\], got 6"),
    ],
)
def test_ordered_samples_rejects_bad_arguments(scores, factor, k, message):
    with pytest.raises(ValueError, match=message):
        ordered_samples(scores, factor, k)


# --- drift --------------------------------------------------------------------------------


def test_drift_flags_only_the_shifted_factor():
    g = torch.Generator().manual_seed(0)
    before = torch.randn(800, 3, generator=g)
    after = torch.randn(800, 3, generator=g)
    after[:, 1] += 0.5

    drifts = factor_drift(before, after, n_permutations=100)

    assert [d.factor for d in drifts] == [0, 1, 2]
    assert all(isinstance(d, FactorDrift) for d in drifts)
    shifted = drifts[1]
    assert shifted.ks_pvalue < 1e-6 and shifted.mmd_pvalue == pytest.approx(1 / 101)
    for d in (drifts[0], drifts[2]):
        assert d.ks_pvalue > 0.01 and d.mmd_pvalue > 0.01
        assert d.mmd2 < shifted.mmd2


def test_drift_mmd_and_ks_match_direct_computation():
    a = torch.tensor([[0.0], [1.0], [2.0]])
    b = torch.tensor([[1.0], [3.0], [4.0], [6.0]])

    (drift,) = factor_drift(a, b, n_permutations=10)

    pooled = np.array([0.0, 1.0, 2.0, 1.0, 3.0, 4.0, 6.0])
    distances = np.abs(pooled[:, None] - pooled[None, :])
    sigma = np.median(distances[np.triu_indices(7, 1)])
    kernel = np.exp(-(distances**2) / (2 * sigma**2))
    mmd2 = kernel[:3, :3].mean() + kernel[3:, 3:].mean() - 2 * kernel[:3, 3:].mean()
    assert drift.bandwidth == pytest.approx(sigma)
    assert drift.mmd2 == pytest.approx(mmd2, rel=1e-5)
    assert drift.ks_statistic == pytest.approx(3 / 4)  # at x = 2: F_a = 1, F_b = 1/4
    assert 1 / 11 <= drift.mmd_pvalue <= 1.0
    assert (drift.n_a, drift.n_b) == (3, 4)


def test_drift_subsamples_each_side():
    g = torch.Generator().manual_seed(0)

    a, b = torch.randn(500, 1, generator=g), torch.randn(40, 1, generator=g)

    (drift,) = factor_drift(a, b, n_permutations=5, max_samples=100)

    assert (drift.n_a, drift.n_b) == (100, 40)


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        (torch.rand(5, 2), torch.rand(5, 3), {}, "same number of factors, got 2 and 3"),
        (torch.rand(1, 2), torch.rand(5, 2), {}, r"scores_a must have shape \(N, n_factors\)"),
        (torch.rand(5, 2), torch.rand(5), {}, r"scores_b must have shape"),
        (torch.rand(5, 2), torch.full((5, 2), float("nan")), {}, "scores_b contains NaN"),
        (torch.rand(5, 2), torch.rand(5, 2), {"n_permutations": 0}, "n_permutations must be"),
        (torch.rand(5, 2), torch.rand(5, 2), {"max_samples": 1}, "max_samples must be at least 2"),
    ],
)
def test_drift_rejects_bad_input(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factor_drift(a, b, **kwargs)


# --- figures ------------------------------------------------------------------------------


def test_traversal_figure_has_one_row_per_factor():
    pca = pixel_embeddings(_low_rank_images(), n_components=3)
    rows = [traversal(pca, j, steps=4) for j in range(3)]

    fig = factor_traversal_figure(rows, pca.explained_variance_ratio.tolist())

    assert isinstance(fig, Figure)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 3  # one strip of the 4 steps per factor
    strip = shown[1].images[0].get_array()
    assert strip.shape == (8, 4 * 8 + 3)  # 8 x 8 images, 1-pixel gaps
    scaled = min_max(rows[1])
    np.testing.assert_allclose(strip[:, 9:17], scaled[1, 0].numpy(), atol=1e-6)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels[0].startswith("factor 0") and labels[0].endswith("%")
    fig.canvas.draw()


def test_traversal_strip_puts_the_steps_side_by_side_with_white_gaps():
    row = torch.stack([torch.full((3, 2, 2), float(v)) for v in (0.1, 0.2, 0.3)])
    strip = traversal_strip(row, gap=2)
    assert strip.shape == (3, 2, 3 * 2 + 2 * 2)
    expected = [0.1, 0.1, 1, 1, 0.2, 0.2, 1, 1, 0.3, 0.3]
    np.testing.assert_allclose(strip[0, 0].numpy(), expected, rtol=1e-6)


def test_traversal_figure_rejects_mismatched_input():
    with pytest.raises(ValueError, match="traversals is empty"):
        factor_traversal_figure([], [])
    with pytest.raises(ValueError, match=r"explained must have one entry per traversal \(1\)"):
        factor_traversal_figure([torch.rand(3, 1, 4, 4)], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"traversals\[1\] must have shape \(3, C, H, W\)"):
        factor_traversal_figure([torch.rand(3, 1, 4, 4), torch.rand(2, 1, 4, 4)], [0.1, 0.2])


def test_explained_variance_figure_draws_bars_and_cumulative_line():
    fig = explained_variance_figure(torch.tensor([0.5, 0.3, 0.1]))

    (ax,) = fig.axes
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.5, 0.3, 0.1]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.5, 0.8, 0.9])
    fig.canvas.draw()


def test_explained_variance_figure_rejects_bad_ratio():
    with pytest.raises(
        ValueError, match=r"ratio must be a non-empty sequence of values in \[0, 1\]"
    ):
        explained_variance_figure([1.5])


def test_docstring_examples_hold():
    import tai.data.factors as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_factors_transform_reproduces_their_scores():
    from tai.data.factors import factors_of_variation

    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    for method in ("pca", "ica"):
        factors = factors_of_variation(x, n_factors=3, method=method)
        assert torch.allclose(factors.transform(x), factors.scores, atol=1e-5)
    with pytest.raises(ValueError, match=r"embeddings must have shape \(N, 6\)"):
        factors.transform(torch.randn(4, 5))
