"""Input checks of the monitoring stage: probabilities, embeddings, targets, counts.

Every function takes a torch tensor or anything :func:`numpy.asarray` accepts and returns
a float64 (or int64) numpy array, or raises ``ValueError`` with a message that names the
wrong value and says what to pass instead, so every monitoring function fails the same
way on the same bad input.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

# A row of probabilities may miss 1 by this much (float32 softmax outputs).
ROW_SUM_TOLERANCE = 1e-3


def as_numpy(values: Any, name: str) -> np.ndarray:
    """``values`` (a tensor, an array or a nested sequence) as a numpy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Expected `{name}` to be a torch tensor or a numpy array, but got "
            f"{type(values).__name__} ({err})."
        ) from err


def as_probs(probs: Any, *, n_classes: int | None = None, name: str = "probs") -> np.ndarray:
    """``(N, K)`` float64 probabilities: finite, in [0, 1], rows summing to 1.

    Args:
        probs: the model's (temperature-scaled) class probabilities.
        n_classes: the class count ``K`` they must have; None accepts any ``K >= 2``.
        name: the argument's name in error messages.
    """
    p = as_numpy(probs, name)
    if p.ndim != 2:
        raise ValueError(
            f"Expected `{name}` of shape (N, K), but got {p.ndim} dimensions {p.shape}. "
            "Pass one row of class probabilities per image."
        )
    if not np.issubdtype(p.dtype, np.floating):
        raise ValueError(
            f"Expected `{name}` to hold floating point probabilities, but got dtype "
            f"{p.dtype}. Pass the softmax of the (temperature-scaled) logits."
        )
    p = p.astype(np.float64)
    if p.shape[1] < 2:
        raise ValueError(f"Expected at least 2 classes in `{name}`, but got K = {p.shape[1]}.")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(
            f"Expected `{name}` with {n_classes} columns (the reference's classes), but got "
            f"{p.shape[1]}. Pass the probabilities of the model the reference was fitted for."
        )
    if not np.isfinite(p).all():
        raise ValueError(f"Expected finite values in `{name}`, but found NaN or inf.")
    if len(p) and (p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"Expected `{name}` in [0, 1], but got values in [{p.min():.4g}, {p.max():.4g}]. "
            "These look like logits: apply softmax(dim=1) first."
        )
    if len(p):
        off = float(np.abs(p.sum(axis=1) - 1).max())
        if off > ROW_SUM_TOLERANCE:
            raise ValueError(
                f"Expected each row of `{name}` to sum to 1 (tolerance {ROW_SUM_TOLERANCE}), "
                f"but a row is off by {off:.4g}. Apply softmax(dim=1) to the logits."
            )
    return p


def as_embeddings(
    embeddings: Any, *, dim: int | None = None, n_rows: int | None = None, name: str = "embeddings"
) -> np.ndarray:
    """``(N, D)`` finite float64 embeddings.

    Args:
        embeddings: penultimate-layer embeddings, one row per image.
        dim: the dimension ``D`` they must have; None accepts any.
        n_rows: the row count they must have (one per row of ``probs``); None accepts any.
        name: the argument's name in error messages.
    """
    e = as_numpy(embeddings, name)
    if e.ndim != 2:
        raise ValueError(
            f"Expected `{name}` of shape (N, D), but got {e.ndim} dimensions {e.shape}. "
            "Flatten the penultimate layer's output per image."
        )
    if not (np.issubdtype(e.dtype, np.floating) or np.issubdtype(e.dtype, np.integer)):
        raise ValueError(f"Expected numbers in `{name}`, but got dtype {e.dtype}.")
    e = e.astype(np.float64)
    if dim is not None and e.shape[1] != dim:
        raise ValueError(
            f"Expected `{name}` of dimension {dim} (the reference's), but got {e.shape[1]}. "
            "Pass the penultimate-layer embeddings of the model the reference was fitted for."
        )
    if n_rows is not None and e.shape[0] != n_rows:
        raise ValueError(
            f"Expected one row of `{name}` per image ({n_rows}), but got {e.shape[0]}."
        )
    if not np.isfinite(e).all():
        raise ValueError(f"Expected finite values in `{name}`, but found NaN or inf.")
    return e


def as_targets(targets: Any, *, n_classes: int, n_rows: int | None = None, name: str) -> np.ndarray:
    """``(N,)`` int64 class indices in ``[0, n_classes)``."""
    t = as_numpy(targets, name)
    if t.ndim != 1:
        raise ValueError(
            f"Expected `{name}` of shape (N,) with class indices, but got shape {t.shape}. "
            "Pass class indices, not one-hot vectors."
        )
    if t.dtype == np.bool_ or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(
            f"Expected `{name}` to hold integer class indices, but got dtype {t.dtype}. "
            f"Convert with {name}.long() or .astype(int)."
        )
    if n_rows is not None and len(t) != n_rows:
        raise ValueError(f"Expected one entry of `{name}` per image ({n_rows}), but got {len(t)}.")
    if len(t) and (t.min() < 0 or t.max() >= n_classes):
        raise ValueError(
            f"Expected `{name}` in [0, {n_classes}) for {n_classes} classes, but got values "
            f"in [{t.min()}, {t.max()}]. Check the label mapping against the classes."
        )
    return t.astype(np.int64)


def as_sigmas(values: Any, name: str) -> np.ndarray:
    """``(N,)`` finite, non-negative float64 noise levels."""
    s = as_numpy(values, name)
    if s.ndim != 1 or len(s) == 0:
        raise ValueError(
            f"Expected `{name}` of shape (N,) with N >= 1 (one noise level per image), "
            f"but got shape {s.shape}."
        )
    if not np.issubdtype(s.dtype, np.number) or s.dtype == np.bool_:
        raise ValueError(f"Expected numbers in `{name}`, but got dtype {s.dtype}.")
    s = s.astype(np.float64)
    if not np.isfinite(s).all() or s.min() < 0:
        raise ValueError(
            f"Expected finite noise levels >= 0 in `{name}`, but got values in "
            f"[{np.nanmin(s):.4g}, {np.nanmax(s):.4g}]. Use tai.data.profile.estimate_noise_sigma."
        )
    return s


def check_count(value: Any, name: str, minimum: int) -> int:
    """An integer ``>= minimum`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}, but got {value!r}.")
    return int(value)


def check_fraction(value: Any, name: str, *, open_low: bool = True) -> float:
    """A finite real in ``(0, 1)`` (or ``[0, 1)`` with ``open_low=False``)."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and (0 < value < 1 if open_low else 0 <= value < 1)
    )
    if not ok:
        interval = "(0, 1)" if open_low else "[0, 1)"
        raise ValueError(f"Expected `{name}` to be a float in {interval}, but got {value!r}.")
    return float(value)


def check_seed(seed: Any) -> int:
    """An integer seed (not a bool)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(
            f"Expected argument `seed` to be an integer, but got {seed!r}. "
            "The same seed gives the same result."
        )
    return int(seed)
