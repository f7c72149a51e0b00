"""Label-noise estimate of a dataset by confident learning on its embeddings.

Confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty
in Dataset Labels", JAIR 70, 2021, https://arxiv.org/abs/1911.00068) needs out-of-sample
class probabilities for every example. :func:`out_of_fold_probabilities` gets them from a
quick classifier (standardisation and multinomial logistic regression) fitted on the
examples' embeddings (or any features) by stratified k-fold cross-validation: each example
is scored by the model that did not see it. From those probabilities the confident joint
of given and true labels is estimated, and :func:`find_label_issues` flags, for every
off-diagonal cell, the examples most likely to be mislabelled, with
``cleanlab.filter.find_label_issues(filter_by="prune_by_noise_rate")``.

Labels are integer class indices ``0 .. K-1``, every class present.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from cleanlab.filter import find_label_issues as _cleanlab_find_label_issues
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["LabelNoiseResult", "find_label_issues", "out_of_fold_probabilities"]

_FILTER_BY = "prune_by_noise_rate"
METHOD = f"confident_learning:{_FILTER_BY}:logistic_regression_oof"


@dataclass(frozen=True)
class LabelNoiseResult:
    """Examples whose given label is likely wrong.

    Attributes:
        issue_indices: indices of the flagged examples, ascending.
        issue_rate: fraction of all examples flagged.
        per_class_rate: given label -> fraction of the examples with that label flagged.
        method: how the issues were found (confident-learning filter and classifier).
    """

    issue_indices: list[int]
    issue_rate: float
    per_class_rate: dict[int, float]
    method: str

    def as_dict(self) -> dict:
        """A JSON-ready dictionary (``json.dumps`` turns the class keys into strings)."""
        return asdict(self)


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, *, n_folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-sample class probabilities from a cross-validated logistic regression.

    A ``StandardScaler`` then ``LogisticRegression(max_iter=1000)`` pipeline is fitted on
    ``n_folds - 1`` folds of a stratified, shuffled split and predicts the held-out fold
    (``sklearn.model_selection.cross_val_predict(method="predict_proba")``).

    Args:
        features: ``(N, D)`` finite features, e.g. a model's embeddings.
        labels: ``(N,)`` integer class indices ``0 .. K-1``, every class with at least
            ``n_folds`` examples.
        n_folds: number of cross-validation folds, ``>= 2``.
        seed: seed of the fold split; the same seed gives the same probabilities.

    Returns:
        ``(N, K)`` probabilities; row ``i`` comes from a model not fitted on example ``i``.

    Raises:
        ValueError: if an argument or the arrays are invalid.
    """
    features, labels = _validate(features, labels, n_folds, seed)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return cross_val_predict(classifier, features, labels, cv=folds, method="predict_proba")


def find_label_issues(
    features: np.ndarray, labels: np.ndarray, *, n_folds: int = 5, seed: int = 0
) -> LabelNoiseResult:
    """Flag examples whose label disagrees confidently with their features (confident learning).

    Runs :func:`out_of_fold_probabilities` and passes them to
    ``cleanlab.filter.find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate")``.
    The ``issue_rate`` estimates the dataset's label-noise rate; it can only find noise the
    features separate, so it is a lower bound when the classes overlap in feature space.

    Args:
        features: ``(N, D)`` finite features, e.g. a model's embeddings.
        labels: ``(N,)`` integer class indices ``0 .. K-1``, every class with at least
            ``n_folds`` examples.
        n_folds: number of cross-validation folds, ``>= 2``.
        seed: seed of the fold split.

    Returns:
        A :class:`LabelNoiseResult`.

    Raises:
        ValueError: if an argument or the arrays are invalid.

    Example:
        >>> import numpy as np
        >>> from sklearn.datasets import make_blobs
        >>> x, y = make_blobs(n_samples=300, centers=3, cluster_std=0.5, random_state=0)
        >>> y[[0, 1, 2]] = (y[[0, 1, 2]] + 1) % 3  # three wrong labels
        >>> find_label_issues(x, y).issue_indices
        [0, 1, 2]
    """
    features, labels = _validate(features, labels, n_folds, seed)
    pred_probs = out_of_fold_probabilities(features, labels, n_folds=n_folds, seed=seed)
    mask = _cleanlab_find_label_issues(labels, pred_probs, filter_by=_FILTER_BY, n_jobs=1)
    n_classes = pred_probs.shape[1]
    flagged = np.bincount(labels[mask], minlength=n_classes)
    given = np.bincount(labels, minlength=n_classes)
    return LabelNoiseResult(
        issue_indices=[int(i) for i in np.flatnonzero(mask)],
        issue_rate=float(mask.mean()),
        per_class_rate={k: float(flagged[k] / given[k]) for k in range(n_classes)},
        method=METHOD,
    )


def _validate(
    features: np.ndarray, labels: np.ndarray, n_folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ValueError(
            f"Expected argument `n_folds` to be an integer >= 2, but got {n_folds!r}. "
            "Pass the number of cross-validation folds, e.g. n_folds=5."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"Expected argument `seed` to be an integer, but got {seed!r}.")
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2:
        raise ValueError(
            f"Expected `features` of shape (N, D), but got shape {features.shape}. "
            "Flatten each example's embedding to one row."
        )
    if labels.ndim != 1:
        raise ValueError(
            f"Expected `labels` of shape (N,), but got shape {labels.shape}. "
            "Pass class indices, not one-hot vectors."
        )
    if features.shape[0] == 0:
        raise ValueError("Expected at least one example, but got an empty dataset (N = 0).")
    if features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Expected `features` and `labels` to have the same number of examples, but got "
            f"{features.shape[0]} and {labels.shape[0]}. Pass one label per row of features."
        )
    if not (np.issubdtype(features.dtype, np.number) and np.isfinite(features).all()):
        raise ValueError(
            "Expected `features` to be finite numbers, but found NaN, inf or a non-numeric "
            f"dtype ({features.dtype}). Check the embedding model's output."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"Expected `labels` to be integer class indices, but got dtype {labels.dtype}. "
            "Map class names to indices 0 .. K-1 first."
        )
    counts = np.bincount(labels) if labels.min() >= 0 else None
    if counts is None or len(counts) < 2 or (counts < n_folds).any():
        raise ValueError(
            f"Expected `labels` in 0 .. K-1 with K >= 2 and every class holding at least "
            f"n_folds = {n_folds} examples, but got values in [{labels.min()}, {labels.max()}] "
            f"with counts {counts.tolist() if counts is not None else 'n/a'}. Remap the "
            "labels to consecutive indices, add examples or lower n_folds."
        )
    return features.astype(np.float64), labels.astype(np.int64)
