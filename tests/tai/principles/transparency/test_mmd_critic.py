import doctest

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from scipy.spatial.distance import pdist, squareform

from tai.principles.transparency import mmd_critic as mmd_module
from tai.principles.transparency.mmd_critic import (
    PrototypesAndCriticisms,
    mmd_critic,
    nearest_prototype_accuracy,
)
from tai.report.figures.explanations import prototype_criticism_figure


def _blobs(centres, sizes, *, std=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = [
        torch.tensor(c, dtype=torch.float32) + std * torch.randn(s, len(c), generator=g)
        for c, s in zip(centres, sizes, strict=True)
    ]
    cluster = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    return torch.cat(points), cluster


# --- independent reference: Kim et al.'s objective on a full kernel matrix ---------------


def _reference(points: np.ndarray, sigma: float, m: int, c: int) -> tuple[list[int], list[int]]:
    """Greedy maximisation of J(S) and of |witness| + log det K_CC, by brute force."""
    kernel = np.exp(-squareform(pdist(points, "sqeuclidean")) / (2 * sigma**2))
    n = len(points)

    def objective(s):
        return 2 / (n * len(s)) * kernel[:, s].sum() - kernel[np.ix_(s, s)].sum() / len(s) ** 2

    protos: list[int] = []
    for _ in range(m):
        gains = [objective(protos + [j]) if j not in protos else -np.inf for j in range(n)]
        protos.append(int(np.argmax(gains)))
    witness = np.abs(kernel.mean(axis=0) - kernel[:, protos].mean(axis=1))
    crits: list[int] = []
    for _ in range(c):
        values = []
        for j in range(n):
            if j in protos or j in crits:
                values.append(-np.inf)
                continue
            chosen = crits + [j]
            sign, logdet = np.linalg.slogdet(kernel[np.ix_(chosen, chosen)])
            values.append(witness[chosen].sum() + (logdet if sign > 0 else -np.inf))
        crits.append(int(np.argmax(values)))
    return protos, crits


def test_greedy_selection_matches_brute_force_objective():
    g = torch.Generator().manual_seed(3)
    points = torch.randn(60, 3, generator=g) * torch.tensor([3.0, 1.0, 0.5])

    labels = torch.zeros(60, dtype=torch.long)

    result = mmd_critic(points, labels, n_prototypes=4, n_criticisms=3, bandwidth=1.5)

    protos, crits = _reference(points.double().numpy(), 1.5, 4, 3)
    assert result.prototypes == {0: protos}
    assert result.criticisms == {0: crits}


def test_bandwidth_is_the_median_pairwise_distance():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(200, 4, generator=g)

    result = mmd_critic(points, torch.arange(200) % 2, n_prototypes=1, n_criticisms=0)

    assert isinstance(result, PrototypesAndCriticisms)
    assert result.bandwidth == pytest.approx(float(np.median(pdist(points.double().numpy()))))
    assert result.criticisms == {0: [], 1: []}


# --- behaviour on mixtures -------------------------------------------------------------


def test_prototypes_recover_the_centres_of_a_gaussian_mixture():
    centres = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]
    points, cluster = _blobs(centres, [60, 50, 40, 30])

    labels = torch.zeros(180, dtype=torch.long)

    # A kernel at the scale of the components (std 0.5): prototypes at their centres.
    local = mmd_critic(points, labels, n_prototypes=4, n_criticisms=0, bandwidth=1.0)
    # The median heuristic (sigma ~ 10 here) still puts one prototype in every component,
    # pulled a little towards the others by the wide kernel.
    median = mmd_critic(points, labels, n_prototypes=4, n_criticisms=0)

    for result, tolerance in ((local, 0.5), (median, 2.5)):
        chosen = result.prototypes[0]
        assert sorted(cluster[chosen].tolist()) == [0, 1, 2, 3]
        distance = torch.cdist(points[chosen], torch.tensor(centres)).min(dim=1).values
        assert torch.all(distance < tolerance)


def test_criticism_falls_in_the_cluster_the_prototypes_miss():
    points, cluster = _blobs([[0.0, 0.0], [8.0, 0.0], [4.0, 9.0]], [60, 60, 12])

    result = mmd_critic(
        points, torch.zeros(132, dtype=torch.long), n_prototypes=2, n_criticisms=1, bandwidth=2.0
    )

    assert sorted(cluster[result.prototypes[0]].tolist()) == [0, 1]
    assert cluster[result.criticisms[0]].tolist() == [2]


def test_prototypes_and_criticisms_are_distinct_members_of_their_class():
    points, cluster = _blobs([[0.0, 0.0], [5.0, 5.0], [0.0, 5.0]], [40, 40, 40], std=1.0)
    labels = cluster % 2  # class 0: clusters 0 and 2, class 1: cluster 1

    result = mmd_critic(points, labels, n_prototypes=3, n_criticisms=2)

    for cls in (0, 1):
        chosen = result.prototypes[cls] + result.criticisms[cls]
        assert len(set(chosen)) == 5
        assert all(int(labels[i]) == cls for i in chosen)


def test_nearest_prototype_accuracy_rises_with_prototypes_on_a_multimodal_class():
    # Class 0 has three modes around class 1's single mode.
    points, cluster = _blobs(
        [[0.0, 0.0], [12.0, 0.0], [0.0, 12.0], [5.0, 5.0]], [60, 40, 30, 60], std=0.8
    )
    labels = (cluster == 3).long()

    accuracies = []
    for m in range(1, 6):
        result = mmd_critic(points, labels, n_prototypes=m, n_criticisms=0)
        index = torch.tensor(result.prototypes[0] + result.prototypes[1])
        accuracies.append(nearest_prototype_accuracy(points, labels, points[index], labels[index]))

    assert all(a <= b for a, b in zip(accuracies, accuracies[1:], strict=False))
    assert accuracies[0] < accuracies[2] == 1.0


# --- scale: chunks and Nyström ---------------------------------------------------------


def test_chunked_exact_mean_kernel_does_not_change_the_result(monkeypatch):
    points, _ = _blobs([[0.0, 0.0], [6.0, 0.0]], [70, 50])
    labels = torch.zeros(120, dtype=torch.long)
    whole = mmd_critic(points, labels, n_prototypes=3, n_criticisms=2)

    monkeypatch.setattr(mmd_module, "_MAX_CHUNK_ELEMENTS", 1000)  # 8 rows at a time
    chunked = mmd_critic(points, labels, n_prototypes=3, n_criticisms=2)

    assert chunked == whole


def test_nystrom_mean_kernel_is_close_to_exact_and_selects_the_same_prototypes(monkeypatch):
    monkeypatch.setattr(mmd_module, "_N_LANDMARKS", 100)
    centres = [[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 0.0]]
    points, _ = _blobs(centres, [400, 300, 300], std=1.0)
    labels = torch.zeros(1000, dtype=torch.long)
    gamma = 0.5 / 3.0**2

    exact = mmd_module._exact_mean_kernel(points, gamma)
    approximate = mmd_module._nystrom_mean_kernel(points, gamma, torch.Generator().manual_seed(0))

    assert float((exact - approximate).abs().max()) < 1e-3
    full = mmd_critic(points, labels, n_prototypes=3, n_criticisms=1)
    nystrom = mmd_critic(points, labels, n_prototypes=3, n_criticisms=1, max_exact=500)
    assert nystrom.approximated == (0,) and full.approximated == ()
    assert nystrom.prototypes == full.prototypes


# --- errors ------------------------------------------------------------------------------


def test_error_names_the_class_with_too_few_examples():
    points = torch.randn(7, 2)
    labels = torch.tensor([0, 0, 0, 0, 3, 3, 3])

    with pytest.raises(
        ValueError,
        match=r"class 3 has 3 examples but n_prototypes \+ "
        r"n_criticisms = 2 \+ 2 = 4 were asked for",
    ):
        mmd_critic(points, labels, n_prototypes=2, n_criticisms=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_prototypes": 0}, "n_prototypes must be at least 1, got 0"),
        ({"n_criticisms": -1}, "n_criticisms must be at least 0, got -1"),
        ({"max_exact": 0}, "max_exact must be at least 1, got 0"),
        ({"bandwidth": 0.0}, "bandwidth must be positive or None, got 0.0"),
    ],
)
def test_mmd_critic_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mmd_critic(torch.randn(10, 2), torch.zeros(10, dtype=torch.long), **kwargs)


@pytest.mark.parametrize(
    ("embeddings", "labels", "error", "message"),
    [
        (torch.randn(10), torch.zeros(10, dtype=torch.long), ValueError, r"non-empty \(N, D\)"),
        (
            torch.randn(10, 2),
            torch.zeros(9, dtype=torch.long),
            ValueError,
            r"labels must have shape \(N,\) = \(10,\)",
        ),
        (torch.randn(10, 2), torch.zeros(10), TypeError, "labels must be an integer tensor"),
        (
            torch.full((10, 2), float("nan")),
            torch.zeros(10, dtype=torch.long),
            ValueError,
            "NaN or infinite",
        ),
    ],
)
def test_mmd_critic_rejects_bad_input(embeddings, labels, error, message):
    with pytest.raises(error, match=message):
        mmd_critic(embeddings, labels)


def test_nearest_prototype_accuracy_rejects_mismatched_input():
    x, y = torch.randn(5, 2), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="same dimension, got 2 and 3"):
        nearest_prototype_accuracy(x, y, torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels of prototype_embeddings must have shape \(2,\)"):
        nearest_prototype_accuracy(x, y, torch.randn(2, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"prototype_embeddings must be a non-empty \(N, D\)"):
        nearest_prototype_accuracy(x, y, torch.randn(0, 2), torch.zeros(0, dtype=torch.long))


# --- figure ------------------------------------------------------------------------------


def test_prototype_criticism_figure_has_a_row_per_class():
    # One mosaic: row k holds class k's prototypes, then its criticisms (framed in red);
    # a class with fewer images leaves white cells.
    protos = [torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6)]
    crits = [torch.rand(1, 1, 6, 6), torch.rand(0, 1, 6, 6), torch.rand(1, 1, 6, 6)]

    fig = prototype_criticism_figure(protos, crits, ["zero", "one", "two"])

    assert isinstance(fig, Figure)
    (ax,) = [a for a in fig.axes if a.images]
    mosaic = ax.images[0].get_array()
    assert mosaic.shape == (3 * 7 - 1, 3 * 7 - 1, 3)  # 6-pixel cells, 1-pixel gaps
    for row in range(3):
        cells = [*protos[row], *crits[row]]
        for col, image in enumerate(cells):
            cell = mosaic[7 * row : 7 * row + 6, 7 * col : 7 * col + 6]
            np.testing.assert_allclose(cell, image[0, :, :, None].expand(6, 6, 3), atol=1e-6)
    np.testing.assert_array_equal(mosaic[7:13, 14:20], np.ones((6, 6, 3)))  # class one: none
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["prototype", "prototype", "criticism", "zero", "one", "two"]
    framed = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches]
    assert framed == [(14, 0), (14, 14)]  # the criticisms of rows 0 and 2, column 2
    assert all(p.get_edgecolor()[:3] == to_rgb("tab:red") for p in ax.patches)
    assert fig._suptitle.get_text() == "MMD-critic prototypes and criticisms"
    fig.canvas.draw()


def test_prototype_criticism_figure_rejects_mismatched_input():
    with pytest.raises(ValueError, match="one entry per class and at least one class"):
        prototype_criticism_figure([torch.rand(1, 1, 4, 4)], [], ["a"])
    with pytest.raises(ValueError, match=r"images_crits\[0\] must have shape \(n, C, H, W\)"):
        prototype_criticism_figure([torch.rand(1, 1, 4, 4)], [torch.rand(4, 4)], ["a"])
    with pytest.raises(ValueError, match=r"at least one image, all of one height and width"):
        prototype_criticism_figure([torch.rand(0, 1, 4, 4)], [torch.rand(0, 1, 4, 4)], ["a"])
    with pytest.raises(ValueError, match=r"got sizes \[\(4, 4\), \(5, 4\)\]"):
        prototype_criticism_figure([torch.rand(1, 1, 4, 4)], [torch.rand(1, 1, 5, 4)], ["a"])


def test_docstring_examples_hold():
    import tai.principles.transparency.mmd_critic as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
