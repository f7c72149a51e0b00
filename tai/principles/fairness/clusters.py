"""Fairness across unlabelled clusters: k-means pseudo-groups within each class, as in GEORGE
(Sohoni et al., NeurIPS 2020, https://arxiv.org/abs/2011.12945), to surface the hidden
stratification of Oakden-Rayner et al. (CHIL 2020): a subclass the model fails on inside
a class it handles well on average.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from tai.principles.fairness._common import (
    _predictions,
    _resolve_classes,
    _seed_validation,
    _targets,
    _to_numpy,
)

# k-means restarts per class: fixed, so a result depends on the seed alone.
_KMEANS_N_INIT = 10


@dataclass(frozen=True)
class ClusterFairness:
    """Accuracy per (class, k-means cluster of that class's embeddings).

    Clusters are numbered per class by decreasing size: cluster 0 is the class's largest.

    Attributes:
        cluster_class: class name of each cluster.
        cluster_index: index of each cluster within its class.
        cluster_size: number of samples of each cluster.
        cluster_accuracy: accuracy within each cluster.
        assignments: for each sample, the index of its cluster within its class.
        worst_cluster_class: class of the cluster with the lowest accuracy (on a tie the
            largest such cluster, then the first).
        worst_cluster_index: index of that cluster within its class.
        worst_cluster_size: number of samples of that cluster.
        worst_cluster_accuracy: the lowest cluster accuracy.
        cluster_accuracy_gap: the largest within-class gap, ``max`` over classes of the
            highest minus the lowest accuracy of that class's clusters.
    """

    cluster_class: tuple[str, ...]
    cluster_index: tuple[int, ...]
    cluster_size: tuple[int, ...]
    cluster_accuracy: tuple[float, ...]
    assignments: tuple[int, ...]
    worst_cluster_class: str
    worst_cluster_index: int
    worst_cluster_size: int
    worst_cluster_accuracy: float
    cluster_accuracy_gap: float

    def as_dict(self) -> dict[str, float]:
        """Scalars for logging: worst cluster accuracy and size, cluster accuracy gap."""
        return {
            "worst_cluster_accuracy": self.worst_cluster_accuracy,
            "worst_cluster_size": float(self.worst_cluster_size),
            "cluster_accuracy_gap": self.cluster_accuracy_gap,
        }

    def per_cluster(self) -> dict[str, list[Any]]:
        """Columns of a per-cluster table: ``class``, ``cluster``, ``size``, ``accuracy``."""
        return {
            "class": list(self.cluster_class),
            "cluster": list(self.cluster_index),
            "size": list(self.cluster_size),
            "accuracy": list(self.cluster_accuracy),
        }


def cluster_fairness(
    embeddings: Any,
    preds: Any,
    targets: Any,
    *,
    clusters_per_class: int = 3,
    classes: int | Sequence[str] | None = None,
    seed: int = 0,
) -> ClusterFairness:
    r"""Accuracy per k-means cluster of each class's embeddings: pseudo-groups without labels.

    For every class with samples, its samples' embeddings (by the *target* class, as in
    GEORGE, Sohoni et al. 2020) are split by scikit-learn's ``KMeans`` (Euclidean,
    ``n_init=10``, ``random_state=seed``) into :math:`k = \min(\text{clusters\_per\_class},
    d)` clusters, :math:`d` the number of distinct embeddings of the class: a class with
    fewer samples (or duplicates) gets fewer clusters, one sample one cluster. Clusters
    are numbered by decreasing size within their class. Normalise the embeddings first
    (e.g. L2) if their scale should not matter.

    The worst cluster is the one with the lowest accuracy; ``cluster_accuracy_gap`` is the
    largest gap between two clusters *of the same class*, so that it measures hidden
    stratification rather than the class gap of :func:`class_fairness`.

    Args:
        embeddings: ``(N, D)`` features of the samples, e.g. the penultimate layer.
        preds: ``(N, C)`` scores or ``(N,)`` predicted class indices.
        targets: ``(N,)`` integer class indices.
        clusters_per_class: most clusters per class, ``>= 1``.
        classes: number of classes or their names, as in :func:`class_fairness`.
        seed: seed of k-means.

    Returns:
        A :class:`ClusterFairness`.

    Raises:
        ValueError: if an argument or input is invalid.
    """
    if (
        isinstance(clusters_per_class, bool)
        or not isinstance(clusters_per_class, int)
        or clusters_per_class < 1
    ):
        raise ValueError(
            f"Expected argument `clusters_per_class` to be an integer >= 1, but got "
            f"{clusters_per_class!r}. Pass the number of pseudo-groups per class, e.g. 3."
        )
    _seed_validation(seed)
    pred_idx, n_scores = _predictions(preds)
    targets = _targets(targets, pred_idx.shape[0])
    names = _resolve_classes(classes, pred_idx, targets, n_scores)
    features = _to_numpy(embeddings)
    if features.ndim != 2 or features.shape[0] != targets.shape[0]:
        raise ValueError(
            f"Expected `embeddings` of shape (N, D) with N = {targets.shape[0]} samples, but "
            f"got shape {features.shape}. Pass one feature vector per prediction."
        )
    if not np.issubdtype(features.dtype, np.number) or not np.isfinite(features).all():
        raise ValueError(
            f"Expected finite numeric `embeddings`, but got dtype {features.dtype} or "
            "NaN/inf values. Check the feature extractor."
        )
    if not np.issubdtype(features.dtype, np.floating):
        features = features.astype(np.float64)

    correct = pred_idx == targets
    assignments = np.full(targets.shape[0], -1, dtype=np.int64)
    rows: list[tuple[int, int, int, float]] = []  # (class, cluster, size, accuracy)
    for k in np.unique(targets):
        members = np.flatnonzero(targets == k)
        labels = _cluster(features[members], clusters_per_class, seed)
        assignments[members] = labels
        for j in range(int(labels.max()) + 1):
            in_cluster = labels == j
            rows.append(
                (int(k), j, int(in_cluster.sum()), float(correct[members][in_cluster].mean()))
            )

    accuracy = np.array([r[3] for r in rows])
    size = np.array([r[2] for r in rows])
    # Lowest accuracy; on a tie the largest cluster (most evidence), then the first.
    worst = min(range(len(rows)), key=lambda i: (accuracy[i], -size[i], i))
    cls = np.array([r[0] for r in rows])
    gap = max(float(accuracy[cls == k].max() - accuracy[cls == k].min()) for k in np.unique(cls))
    return ClusterFairness(
        cluster_class=tuple(names[r[0]] for r in rows),
        cluster_index=tuple(r[1] for r in rows),
        cluster_size=tuple(r[2] for r in rows),
        cluster_accuracy=tuple(r[3] for r in rows),
        assignments=tuple(int(a) for a in assignments),
        worst_cluster_class=names[rows[worst][0]],
        worst_cluster_index=rows[worst][1],
        worst_cluster_size=rows[worst][2],
        worst_cluster_accuracy=rows[worst][3],
        cluster_accuracy_gap=gap,
    )


def _cluster(features: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """k-means labels of one class, renumbered by decreasing size (ties: first sample)."""
    k = min(clusters, np.unique(features, axis=0).shape[0])
    if k == 1:
        return np.zeros(features.shape[0], dtype=np.int64)
    labels = KMeans(n_clusters=k, n_init=_KMEANS_N_INIT, random_state=seed).fit_predict(features)
    sizes = np.bincount(labels, minlength=k)
    first = np.array([np.flatnonzero(labels == j)[0] for j in range(k)])
    order = np.lexsort((first, -sizes))  # last key is primary
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[labels]
