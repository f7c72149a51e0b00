"""Per-class prototypes: the k medoids of each class's embeddings.

A prototype is a real training example that represents a mode of its class (Kim et al.,
"Examples are not Enough, Learn to Criticize!", NeurIPS 2016, use the same idea with MMD).
Medoids rather than k-means centres are used because a centre is not an image one can show.

The clustering is the alternating k-medoids of Park & Jun (2009) with a k-means++ seeding
(Arthur & Vassilvitskii, 2007): assign every point to its nearest medoid, move each medoid
to the cluster member with the smallest summed distance to the other members, repeat
until the medoids stop moving. It is written here because ``sklearn-extra`` (which has
``KMedoids``) is not available in this project's environment.

Distances are Euclidean, computed with :func:`torch.cdist` over row chunks so that memory
stays bounded by ``_MAX_CHUNK_ELEMENTS`` distances however large a class is.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Prototypes", "select_prototypes"]

# At most this many pairwise distances are held at once (64 MiB in float32).
_MAX_CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class Prototypes:
    """Prototype indices per class.

    Attributes:
        indices: class -> indices into the embeddings array (the class's medoids), the
            medoid nearest to the class mean first.
    """

    indices: dict[int, list[int]]

    def all_indices(self) -> list[int]:
        """All prototype indices, class by class in ascending class order."""
        return [i for cls in sorted(self.indices) for i in self.indices[cls]]


def select_prototypes(
    embeddings: Tensor,
    labels: Tensor,
    *,
    per_class: int = 1,
    seed: int = 0,
    max_iter: int = 50,
    n_init: int = 4,
) -> Prototypes:
    """Select ``per_class`` medoids of each class's embeddings by k-medoids.

    Args:
        embeddings: ``(N, D)`` float tensor, one embedding per example.
        labels: ``(N,)`` integer tensor of class labels.
        per_class: number of prototypes (medoids) per class, at least 1.
        seed: seed of the k-means++ initialisation; the same seed gives the same result.
        max_iter: most assignment/update rounds per class.
        n_init: independent initialisations per class; the medoids with the smallest
            total distance of the class's points to their nearest medoid are kept.
            Alternating k-medoids only moves medoids within their clusters, so a seeding
            that puts two medoids in one mode cannot recover; restarts guard against it.

    Returns:
        :class:`Prototypes` with, for every class present in ``labels``, ``per_class``
        distinct indices into ``embeddings``, ordered nearest-to-class-mean first.

    Raises:
        ValueError: on empty input, mismatched shapes, non-finite embeddings,
            ``per_class < 1``, ``max_iter < 1``, ``n_init < 1`` or a class with fewer
            than ``per_class`` examples.
        TypeError: if ``labels`` is not an integer tensor.

    Example:
        >>> emb = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1], [9.0]])
        >>> select_prototypes(emb, torch.tensor([0, 0, 0, 1, 1, 1]), per_class=1).indices
        {0: [1], 1: [4]}
    """
    _check_args(embeddings, labels, per_class=per_class, max_iter=max_iter, n_init=n_init)
    embeddings = embeddings.detach().float()
    labels = labels.detach().to(embeddings.device)
    generator = torch.Generator().manual_seed(seed)

    indices: dict[int, list[int]] = {}
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        if members.numel() < per_class:
            raise ValueError(
                f"class {cls} has {members.numel()} examples but per_class={per_class} "
                f"prototypes were asked for; lower per_class to at most {members.numel()}."
            )
        points = embeddings[members]
        runs = [
            _k_medoids(points, per_class, generator=generator, max_iter=max_iter)
            for _ in range(n_init)
        ]
        medoids = min(runs, key=lambda run: _total_cost(points, run))
        medoids = _order_by_distance_to_mean(points, medoids)
        indices[int(cls)] = members[medoids].tolist()
    return Prototypes(indices=indices)


def _check_args(
    embeddings: Tensor, labels: Tensor, *, per_class: int, max_iter: int, n_init: int
) -> None:
    for name, value in (("per_class", per_class), ("max_iter", max_iter), ("n_init", n_init)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must have shape (N, D), got shape {tuple(embeddings.shape)}.")
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must have shape (N,) = ({embeddings.shape[0]},) to match embeddings, "
            f"got shape {tuple(labels.shape)}."
        )
    if embeddings.shape[0] == 0:
        raise ValueError("embeddings is empty: there are no examples to select prototypes from.")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}.")
    if not torch.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or infinite values; fix the embedding model.")


def _k_medoids(points: Tensor, k: int, *, generator: torch.Generator, max_iter: int) -> Tensor:
    """Indices (into ``points``) of ``k`` distinct medoids."""
    medoids = _kmeans_pp_init(points, k, generator=generator)
    for _ in range(max_iter):
        assignment = _nearest(points, points[medoids])
        # Ties (duplicate points) could empty a cluster; pin every medoid to its own
        # cluster so each cluster keeps at least its medoid and medoids stay distinct.
        assignment[medoids] = torch.arange(k, device=points.device)
        updated = medoids.clone()
        for j in range(k):
            cluster = torch.nonzero(assignment == j).flatten()
            updated[j] = cluster[_medoid_of(points[cluster])]
        if torch.equal(updated, medoids):
            break
        medoids = updated
    return medoids


def _kmeans_pp_init(points: Tensor, k: int, *, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: each next seed drawn with probability proportional to D(x)^2."""
    n = points.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    nearest_sq = _distances_to(points, points[first]).square()
    for _ in range(1, k):
        weights = nearest_sq.cpu().double()
        weights[chosen] = 0.0
        if weights.sum() <= 0:
            # Every remaining point coincides with a seed: draw uniformly among the rest.
            weights = torch.ones(n, dtype=torch.float64)
            weights[chosen] = 0.0
        nxt = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(nxt)
        nearest_sq = torch.minimum(nearest_sq, _distances_to(points, points[nxt]).square())
    return torch.tensor(chosen, device=points.device)


def _chunk_rows(n_cols: int) -> int:
    return max(1, _MAX_CHUNK_ELEMENTS // max(1, n_cols))


def _distances_to(points: Tensor, point: Tensor) -> Tensor:
    return torch.linalg.vector_norm(points - point, dim=1)


def _nearest(points: Tensor, centres: Tensor) -> Tensor:
    """Index of the nearest centre for every point."""
    step = _chunk_rows(centres.shape[0])
    return torch.cat([torch.cdist(chunk, centres).argmin(dim=1) for chunk in points.split(step)])


def _total_cost(points: Tensor, medoids: Tensor) -> float:
    """Sum over points of the distance to the nearest medoid."""
    step = _chunk_rows(medoids.shape[0])
    centres = points[medoids]
    return sum(
        float(torch.cdist(chunk, centres).min(dim=1).values.sum()) for chunk in points.split(step)
    )


def _medoid_of(cluster: Tensor) -> int:
    """Index of the member with the smallest summed distance to all members."""
    step = _chunk_rows(cluster.shape[0])
    cost = torch.cat([torch.cdist(chunk, cluster).sum(dim=1) for chunk in cluster.split(step)])
    return int(cost.argmin())


def _order_by_distance_to_mean(points: Tensor, medoids: Tensor) -> Tensor:
    distance = _distances_to(points[medoids], points.mean(dim=0))
    return medoids[torch.argsort(distance, stable=True)]
