"""MMD-critic: prototypes and criticisms of every class (Kim, Khanna & Koyejo, "Examples
are not Enough, Learn to Criticize! Criticism for Interpretability", NeurIPS 2016).

With an RBF kernel ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))`` and the ``n`` embeddings
``X`` of one class, the prototypes ``S`` are chosen greedily to maximise

    J(S) = 2 / (n |S|) sum_{i in X, j in S} k(x_i, x_j) - 1 / |S|^2 sum_{i, j in S} k(x_i, x_j)

which is the squared MMD between the class and its prototypes up to a constant, so the
prototypes are the examples whose distribution looks most like the class's. Adding candidate
``j`` to ``S`` (``s = |S|``) is best for the largest

    2 mu_j - (2 sum_{l in S} k(x_j, x_l) + k(x_j, x_j)) / (s + 1),   mu_j = 1/n sum_i k(x_i, x_j)

(the score of the authors' ``greedy_select_protos``). The criticisms ``C`` are the
examples the prototypes represent worst: the largest absolute witness function

    w(x) = mu(x) - 1/|S| sum_{l in S} k(x, x_l)

plus the diversity regulariser ``log det K_CC``, also greedy; the gain of the regulariser
for a candidate is the log of its Schur complement ``k(x, x) - k_xC K_CC^-1 k_Cx``, which
keeps two criticisms from describing the same gap.

Bandwidth: ``sigma`` is the median pairwise distance of at most 1000 embeddings drawn
(seeded) from all classes (the median heuristic), one value for the whole dataset. On a
class with well separated modes it spans the distances between modes, so each prototype
lands in its own mode but is pulled a little towards the others; pass ``bandwidth`` at the
scale of the modes for sharper prototypes (Kim et al. chose it by cross-validation).

Scale: everything but ``mu`` needs only the kernel between all points and the few selected
ones (``O(n (m + c) d)``). ``mu`` needs every pairwise kernel value. Up to ``max_exact``
points per class it is computed exactly, in row chunks, so no ``n x n`` matrix is ever
held (``O(n^2 d)`` time). Above that, ``mu`` comes from Nyström features (Williams &
Seeger, NeurIPS 2000) on ``L = 1024`` landmarks drawn from the class:
``K ~ K_nL K_LL^-1 K_Ln``, so ``mu ~ K_nL K_LL^-1 (K_Ln 1 / n)`` in ``O(n L d + L^3)``
time and ``O(L^2)`` memory beyond the embeddings.
Nyström was preferred to random Fourier features because, for the smooth kernels the median
heuristic gives, the spectrum of ``K`` decays fast and a thousand landmarks capture it far
better than a thousand random features (whose error is ``O(1/sqrt(features))`` whatever
the spectrum).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PrototypesAndCriticisms", "mmd_critic", "nearest_prototype_accuracy"]

# At most this many kernel values are held at once (64 MiB in float32).
_MAX_CHUNK_ELEMENTS = 2**24
_N_LANDMARKS = 1024
_MAX_MEDIAN_SAMPLES = 1000
# Ridge added to the landmark kernel matrix before its Cholesky factorisation.
_RIDGE = 1e-6


@dataclass(frozen=True)
class PrototypesAndCriticisms:
    """MMD-critic selections per class.

    Attributes:
        prototypes: class -> indices into the embeddings, in greedy order (the most
            representative first).
        criticisms: class -> indices into the embeddings, in greedy order (the worst
            represented first); empty lists when no criticism was asked for.
        bandwidth: RBF bandwidth ``sigma`` used.
        approximated: classes whose mean kernel ``mu`` came from Nyström features because
            they have more than ``max_exact`` examples.
    """

    prototypes: dict[int, list[int]]
    criticisms: dict[int, list[int]]
    bandwidth: float
    approximated: tuple[int, ...] = ()


def mmd_critic(
    embeddings: Tensor,
    labels: Tensor,
    *,
    n_prototypes: int = 2,
    n_criticisms: int = 1,
    seed: int = 0,
    max_exact: int = 10000,
    bandwidth: float | None = None,
) -> PrototypesAndCriticisms:
    """Select ``n_prototypes`` prototypes and ``n_criticisms`` criticisms of every class.

    Args:
        embeddings: ``(N, D)`` float tensor, one embedding per example.
        labels: ``(N,)`` integer class labels.
        n_prototypes: prototypes per class, at least 1.
        n_criticisms: criticisms per class, at least 0.
        seed: seed of the median-heuristic subsample and the Nyström landmarks.
        max_exact: classes with more examples than this use Nyström features for ``mu``.
        bandwidth: RBF ``sigma``; ``None`` uses the median heuristic.

    Returns:
        :class:`PrototypesAndCriticisms`; prototypes and criticisms of a class are
        distinct examples of that class.

    Raises:
        ValueError: on wrong shapes, empty or non-finite embeddings, ``n_prototypes < 1``,
            ``n_criticisms < 0``, ``max_exact < 1``, a non-positive ``bandwidth``, or a
            class with fewer examples than ``n_prototypes + n_criticisms`` (the message
            names the class).
        TypeError: if ``labels`` is not an integer tensor.

    Example:
        Two tight groups and a stray point: one prototype per group, the stray point is
        the criticism.

        >>> emb = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2], [9.0]])
        >>> out = mmd_critic(emb, torch.zeros(7, dtype=torch.long), bandwidth=1.0)
        >>> out.prototypes, out.criticisms
        ({0: [4, 1]}, {0: [6]})
    """
    _check_args(embeddings, labels, n_prototypes, n_criticisms, max_exact, bandwidth)
    x = embeddings.detach().float().cpu()
    labels = labels.detach().cpu()
    generator = torch.Generator().manual_seed(seed)
    sigma = float(bandwidth) if bandwidth is not None else _median_heuristic(x, generator)
    gamma = 0.5 / sigma**2

    prototypes: dict[int, list[int]] = {}
    criticisms: dict[int, list[int]] = {}
    approximated = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        wanted = n_prototypes + n_criticisms
        if members.numel() < wanted:
            raise ValueError(
                f"class {cls} has {members.numel()} examples but n_prototypes + n_criticisms "
                f"= {n_prototypes} + {n_criticisms} = {wanted} were asked for; ask for at "
                f"most {members.numel()} in all."
            )
        points = x[members]
        if len(points) > max_exact:
            mu = _nystrom_mean_kernel(points, gamma, generator)
            approximated.append(int(cls))
        else:
            mu = _exact_mean_kernel(points, gamma)
        protos, kernel_to_protos = _greedy_prototypes(points, mu, gamma, n_prototypes)
        crits = _greedy_criticisms(points, mu, gamma, protos, kernel_to_protos, n_criticisms)
        prototypes[int(cls)] = members[protos].tolist()
        criticisms[int(cls)] = members[crits].tolist()
    return PrototypesAndCriticisms(
        prototypes=prototypes,
        criticisms=criticisms,
        bandwidth=sigma,
        approximated=tuple(approximated),
    )


def nearest_prototype_accuracy(
    embeddings: Tensor,
    labels: Tensor,
    prototype_embeddings: Tensor,
    prototype_labels: Tensor,
) -> float:
    """Accuracy of the 1-nearest-prototype classifier (Euclidean), as in Kim et al.'s
    evaluation of prototypes.

    Args:
        embeddings: ``(N, D)`` embeddings to classify.
        labels: ``(N,)`` their true labels.
        prototype_embeddings: ``(P, D)`` prototype embeddings.
        prototype_labels: ``(P,)`` the prototypes' labels.

    Returns:
        Fraction of ``embeddings`` whose nearest prototype has the same label (ties go
        to the first prototype).

    Raises:
        ValueError: on empty inputs or mismatched shapes.

    Example:
        >>> emb = torch.tensor([[0.0], [1.0], [4.0], [2.0]])
        >>> nearest_prototype_accuracy(
        ...     emb, torch.tensor([0, 0, 1, 1]), torch.tensor([[0.5], [4.0]]), torch.tensor([0, 1])
        ... )
        0.75
    """
    for name, points, point_labels in (
        ("embeddings", embeddings, labels),
        ("prototype_embeddings", prototype_embeddings, prototype_labels),
    ):
        if points.ndim != 2 or points.shape[0] == 0:
            raise ValueError(
                f"{name} must be a non-empty (N, D) tensor, got shape {tuple(points.shape)}."
            )
        if point_labels.shape != (points.shape[0],):
            raise ValueError(
                f"labels of {name} must have shape ({points.shape[0]},), "
                f"got {tuple(point_labels.shape)}."
            )
    if embeddings.shape[1] != prototype_embeddings.shape[1]:
        raise ValueError(
            f"embeddings and prototype_embeddings must have the same dimension, got "
            f"{embeddings.shape[1]} and {prototype_embeddings.shape[1]}."
        )
    x, protos = embeddings.detach().float().cpu(), prototype_embeddings.detach().float().cpu()
    step = max(1, _MAX_CHUNK_ELEMENTS // protos.shape[0])
    nearest = torch.cat([torch.cdist(chunk, protos).argmin(dim=1) for chunk in x.split(step)])
    predicted = prototype_labels.detach().cpu()[nearest]
    return float((predicted == labels.detach().cpu()).double().mean())


def _check_args(
    embeddings: Tensor,
    labels: Tensor,
    n_prototypes: int,
    n_criticisms: int,
    max_exact: int,
    bandwidth: float | None,
) -> None:
    if n_prototypes < 1:
        raise ValueError(f"n_prototypes must be at least 1, got {n_prototypes}.")
    if n_criticisms < 0:
        raise ValueError(f"n_criticisms must be at least 0, got {n_criticisms}.")
    if max_exact < 1:
        raise ValueError(f"max_exact must be at least 1, got {max_exact}.")
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive or None, got {bandwidth}.")
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(
            f"embeddings must be a non-empty (N, D) tensor, got shape {tuple(embeddings.shape)}."
        )
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(
            f"labels must have shape (N,) = ({embeddings.shape[0]},) to match embeddings, "
            f"got shape {tuple(labels.shape)}."
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}.")
    if not torch.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or infinite values; fix the embedding model.")


def _median_heuristic(x: Tensor, generator: torch.Generator) -> float:
    """Median distance between distinct points of a seeded subsample (1.0 if all coincide)."""
    if len(x) > _MAX_MEDIAN_SAMPLES:
        x = x[torch.randperm(len(x), generator=generator)[:_MAX_MEDIAN_SAMPLES]]
    distances = torch.cdist(x.double(), x.double())
    upper = distances[tuple(torch.triu_indices(len(x), len(x), offset=1))]
    positive = upper[upper > 0]
    return float(torch.quantile(positive, 0.5)) if positive.numel() else 1.0


def _kernel(a: Tensor, b: Tensor, gamma: float) -> Tensor:
    """``exp(-gamma ||a_i - b_j||^2)``; squared distances by one matmul, no square root."""
    squared = torch.addmm(a.square().sum(dim=1, keepdim=True), a, b.T, alpha=-2.0).add_(
        b.square().sum(dim=1)
    )
    return squared.clamp_(min=0.0).mul_(-gamma).exp_()


def _exact_mean_kernel(points: Tensor, gamma: float) -> Tensor:
    """``mu_j = mean_i k(x_i, x_j)``, in row chunks of at most _MAX_CHUNK_ELEMENTS values."""
    step = max(1, _MAX_CHUNK_ELEMENTS // len(points))
    sums = [
        _kernel(chunk, points, gamma).sum(dim=1, dtype=torch.float64)
        for chunk in points.split(step)
    ]
    return torch.cat(sums) / len(points)


def _nystrom_mean_kernel(points: Tensor, gamma: float, generator: torch.Generator) -> Tensor:
    """``mu`` under the Nyström approximation ``K ~ K_nL K_LL^-1 K_Ln`` on landmarks ``L``.

    ``mu = K 1/n ~ K_nL a`` with ``a = K_LL^-1 (K_Ln 1/n)``; ``K_nL`` is built twice in
    row chunks rather than held, and ``K_LL`` gets a small ridge so that the Cholesky
    solve stays stable for the smooth kernels the median heuristic gives.
    """
    n = len(points)
    landmarks = points[torch.randperm(n, generator=generator)[: min(n, _N_LANDMARKS)]]
    step = max(1, _MAX_CHUNK_ELEMENTS // len(landmarks))
    mean_to_landmarks = (
        sum(
            _kernel(chunk, landmarks, gamma).sum(dim=0, dtype=torch.float64)
            for chunk in points.split(step)
        )
        / n
    )
    gram = _kernel(landmarks, landmarks, gamma).double()
    gram.diagonal().add_(_RIDGE)
    weights = torch.cholesky_solve(mean_to_landmarks[:, None], torch.linalg.cholesky(gram)).float()
    mu = torch.cat([_kernel(chunk, landmarks, gamma) @ weights for chunk in points.split(step)])
    return mu[:, 0].double().clamp_(0.0, 1.0)


def _greedy_prototypes(
    points: Tensor, mu: Tensor, gamma: float, m: int
) -> tuple[list[int], Tensor]:
    """Greedy MMD prototypes and the ``(n, m)`` kernel between all points and them."""
    n = len(points)
    summed = torch.zeros(n, dtype=torch.float64)  # sum_{l in S} k(x_j, x_l)
    columns = []
    chosen: list[int] = []
    for s in range(m):
        score = 2 * mu - (2 * summed + 1.0) / (s + 1)  # k(x, x) = 1 for the RBF kernel
        score[chosen] = -torch.inf
        best = int(torch.argmax(score))
        chosen.append(best)
        column = _kernel(points, points[best : best + 1], gamma)[:, 0].double()
        columns.append(column)
        summed += column
    return chosen, torch.stack(columns, dim=1)


def _greedy_criticisms(
    points: Tensor,
    mu: Tensor,
    gamma: float,
    prototypes: list[int],
    kernel_to_prototypes: Tensor,
    c: int,
) -> list[int]:
    """Greedy criticisms: largest ``|witness|`` plus the ``log det K_CC`` regulariser."""
    witness = (mu - kernel_to_prototypes.mean(dim=1)).abs()
    excluded = list(prototypes)
    chosen: list[int] = []
    columns = torch.empty(len(points), 0, dtype=torch.float64)  # k(x, C)
    for _ in range(c):
        if chosen:
            gram = columns[chosen]  # K_CC
            solved = torch.linalg.solve(gram, columns.T)  # K_CC^-1 k_Cx
            schur = 1.0 - (columns * solved.T).sum(dim=1)
            gain = torch.log(schur.clamp_min(0.0))  # -inf for points already covered
        else:
            gain = torch.zeros_like(witness)  # log k(x, x) = log 1
        score = witness + gain
        score[excluded + chosen] = -torch.inf
        if torch.isneginf(score.max()):
            # Every candidate left duplicates a criticism; fall back to the witness alone.
            score = witness.clone()
            score[excluded + chosen] = -torch.inf
        best = int(torch.argmax(score))
        chosen.append(best)
        column = _kernel(points, points[best : best + 1], gamma).double()
        columns = torch.cat([columns, column], dim=1)
    return chosen
