"""Argument and tensor validation and the stratified bootstrap shared by the fairness views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from tai.inputs import check_confidence


def _bootstrap_arg_validation(n_resamples: int, confidence: float, seed: int) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(
            f"Expected argument `n_resamples` to be an integer >= 1, but got {n_resamples!r}. "
            "Pass the number of bootstrap resamples, e.g. n_resamples=1000."
        )
    check_confidence(confidence)
    _seed_validation(seed)


def _seed_validation(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(
            f"Expected argument `seed` to be an integer, but got {seed!r}. "
            "The same seed gives the same result."
        )


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _is_integer_array(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_


def _predictions(probs_or_preds: Any) -> tuple[np.ndarray, int | None]:
    """Predicted class indices and, for ``(N, C)`` scores, ``C``."""
    array = _to_numpy(probs_or_preds)
    if array.ndim == 2:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(
                f"Expected `(N, C)` predictions to be float scores, but got dtype "
                f"{array.dtype}. Pass probabilities or logits, or `(N,)` class indices."
            )
        if array.shape[1] < 1 or not np.isfinite(array).all():
            raise ValueError(
                "Expected `(N, C)` scores with C >= 1 and finite values, but got shape "
                f"{array.shape} or NaN/inf. Check the model output."
            )
        return array.argmax(axis=1), int(array.shape[1])
    if array.ndim == 1 and (_is_integer_array(array) or array.size == 0):
        return array.astype(np.int64), None
    raise ValueError(
        f"Expected predictions of shape (N, C) (float scores) or (N,) (integer class "
        f"indices), but got shape {array.shape} and dtype {array.dtype}. Pass "
        "logits.softmax(dim=1), the logits, or logits.argmax(dim=1)."
    )


def _targets(targets: Any, n: int) -> np.ndarray:
    array = _to_numpy(targets)
    if array.ndim != 1 or not (_is_integer_array(array) or array.size == 0):
        raise ValueError(
            f"Expected `targets` of shape (N,) with integer class indices, but got shape "
            f"{array.shape} and dtype {array.dtype}. Pass class indices, not one-hot vectors."
        )
    if array.shape[0] != n:
        raise ValueError(
            f"Expected predictions and `targets` to have the same number of samples, but "
            f"got {n} and {array.shape[0]}. Pass one target per prediction."
        )
    if n == 0:
        raise ValueError(
            "Expected at least one sample, but got none (N = 0). Fairness is undefined "
            "without predictions; check the data loader."
        )
    return array.astype(np.int64)


def _resolve_classes(
    classes: int | Sequence[str] | None,
    preds: np.ndarray,
    targets: np.ndarray,
    n_scores: int | None,
) -> tuple[str, ...]:
    if classes is None:
        n_classes = n_scores or int(max(preds.max(), targets.max())) + 1
        names = tuple(str(k) for k in range(n_classes))
    elif isinstance(classes, int) and not isinstance(classes, bool):
        if classes < 1:
            raise ValueError(
                f"Expected argument `classes` to be >= 1, but got {classes}. Pass the number "
                "of classes or their names."
            )
        names = tuple(str(k) for k in range(classes))
    elif isinstance(classes, Sequence | np.ndarray) and not isinstance(classes, str):
        names = tuple(str(c) for c in classes)
        if not names or len(set(names)) != len(names):
            raise ValueError(
                f"Expected argument `classes` to be distinct class names, but got {classes!r}. "
                "Pass the names in the order of the class indices."
            )
    else:
        raise ValueError(
            f"Expected argument `classes` to be None, an integer or a sequence of names, but "
            f"got {classes!r}."
        )
    n_classes = len(names)
    if n_scores is not None and n_scores != n_classes:
        raise ValueError(
            f"Expected {n_classes} score columns for the {n_classes} classes, but the "
            f"predictions have {n_scores}. Pass `classes` matching the model's output."
        )
    for name, values in (("predictions", preds), ("targets", targets)):
        if values.min() < 0 or values.max() >= n_classes:
            raise ValueError(
                f"Expected {name} in [0, {n_classes}) for {n_classes} classes, but got values "
                f"in [{values.min()}, {values.max()}]. Check the label mapping or `classes`."
            )
    return names


def _stratified_accuracy_bootstrap(
    correct: np.ndarray, size: np.ndarray, n_resamples: int, seed: int
) -> np.ndarray:
    """Accuracy of every stratum in each stratified resample, shape ``(n_resamples, S)``.

    A resample draws ``size_s`` of stratum ``s``'s samples with replacement; each draw is
    correct with probability ``correct_s / size_s``, independently, so its number of
    correct samples is exactly ``Binomial(size_s, correct_s / size_s)``. Drawing that count
    gives the same bootstrap distribution as resampling indices (own code rather than
    ``scipy.stats.bootstrap``, which it matches in the tests) at ``O(n_resamples * S)``
    instead of ``O(n_resamples * N)``, and every statistic is computed from the same draws.
    """
    rng = np.random.default_rng(seed)
    return rng.binomial(size, correct / size, size=(n_resamples, size.size)) / size


def _min_and_gap_intervals(
    boot: np.ndarray, confidence: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile intervals (linear interpolation) of the row minimum and the row range."""
    alpha = (1 - confidence) / 2
    q = [alpha, 1 - alpha]
    worst = np.quantile(boot.min(axis=1), q)
    gap = np.quantile(boot.max(axis=1) - boot.min(axis=1), q)
    return (float(worst[0]), float(worst[1])), (float(gap[0]), float(gap[1]))
