"""Input checks shared by the metric modules: a batch of images and its class targets.

Each check raises ``ValueError`` with a message that names the wrong value and says what
is accepted, so every metric function fails the same way on the same bad input.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

# Names listed in one error message at most.
MAX_LISTED = 5
# Values this far outside [0, 1] are rounding, not unnormalised images.
RANGE_TOLERANCE = 1e-6


def check_image_batch(
    images: object,
    *,
    channels: Sequence[int] | None = (1, 3),
    hint: str = "Scale images to [0, 1] before normalisation (mean/std).",
) -> None:
    """A non-empty ``(N, C, H, W)`` float tensor, finite, in ``[0, 1]``.

    Args:
        images: what to check.
        channels: the accepted channel counts; None accepts any.
        hint: what to do when the values are outside ``[0, 1]``.
    """
    if not isinstance(images, Tensor):
        raise ValueError(
            f"Expected `images` to be a torch tensor, but got {type(images).__name__}."
        )
    if images.ndim != 4:
        raise ValueError(
            f"Expected `images` of shape (N, C, H, W), but got {images.ndim} dimensions "
            f"{tuple(images.shape)}. Add a batch dimension with images.unsqueeze(0)."
        )
    if images.shape[0] == 0:
        raise ValueError("Expected at least one image, but got an empty batch (N = 0).")
    if channels is not None and images.shape[1] not in channels:
        raise ValueError(
            f"Expected 1 or 3 channels (grayscale or RGB), but got C = {images.shape[1]} in "
            f"shape {tuple(images.shape)}. Images must be channels-first (N, C, H, W)."
        )
    if not images.is_floating_point():
        raise ValueError(
            f"Expected a floating point tensor in [0, 1], but got dtype {images.dtype}. "
            "Convert uint8 images with images.float() / 255."
        )
    if not torch.isfinite(images).all():
        raise ValueError("Expected finite values in `images`, but found NaN or inf.")
    low, high = images.min().item(), images.max().item()
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"Expected `images` in [0, 1], but got values in [{low:.4g}, {high:.4g}]. {hint}"
        )


def check_class_targets(images: Tensor, targets: object, *, name: str = "targets") -> None:
    """``(N,)`` integer class indices, one per image, none negative."""
    if not isinstance(targets, Tensor) or targets.ndim != 1:
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"Expected `{name}` of shape (N,) with class indices, but got {shape}.")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(
            f"Expected `{name}` to hold integer class indices, but got dtype {targets.dtype}. "
            f"Convert with {name}.long()."
        )
    if images.shape[0] != targets.shape[0]:
        raise ValueError(
            f"Expected one target per image, but got {images.shape[0]} images and "
            f"{targets.shape[0]} targets."
        )
    if len(targets) and targets.min() < 0:
        raise ValueError(f"Expected class indices >= 0 in `{name}`, but got {int(targets.min())}.")


def check_confidence(confidence: object) -> None:
    """A two-sided coverage in the open interval (0, 1), e.g. 0.95."""
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, numbers.Real)
        or not math.isfinite(confidence)
        or not 0 < confidence < 1
    ):
        raise ValueError(
            f"Expected argument `confidence` to be a float in the open interval (0, 1), but "
            f"got {confidence!r}. Pass the two-sided coverage, e.g. confidence=0.95."
        )


def listed(names: Sequence[object]) -> str:
    """The first :data:`MAX_LISTED` names for an error message, and how many more."""
    shown = ", ".join(repr(n) for n in names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def string_labels(values: Iterable[object], what: str) -> list[str]:
    """``values`` as a list, each checked to be a string (class or group names)."""
    labels = list(values)
    bad = [v for v in labels if not isinstance(v, str)]
    if bad:
        raise ValueError(
            f"Expected {what} to be strings, but got {bad[0]!r} of type "
            f"{type(bad[0]).__name__}. Convert them with str() or read them with "
            "read_group_column."
        )
    return labels
