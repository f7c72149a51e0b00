r"""Accuracy of a classifier under common corruptions (Hendrycks & Dietterich 2019).

For each corruption in :mod:`tai.principles.reliability.corruptions` and each severity, the whole
evaluation set
is corrupted with the same seed and classified; the result is a table of accuracies, one
row per corruption and one column per severity, beside the clean accuracy
(:func:`corruption_accuracy`).

Against a baseline model's table, :func:`corruption_errors` gives the paper's corruption
errors (Hendrycks & Dietterich, ICLR 2019, https://arxiv.org/abs/1903.12261, section 3),
with top-1 errors :math:`E = 1 - \text{accuracy}` summed over the severities :math:`s`:

.. math::

    \mathrm{CE}_c = \frac{\sum_s E^f_{s,c}}{\sum_s E^{b}_{s,c}}, \qquad
    \mathrm{Relative\ CE}_c = \frac{\sum_s (E^f_{s,c} - E^f_{clean})}
                                    {\sum_s (E^{b}_{s,c} - E^{b}_{clean})},

and mCE and relative mCE, their means over the corruptions :math:`c`. The paper averages
over the 15 :data:`tai.principles.reliability.corruptions.IMAGENET_C_CORRUPTIONS` (evaluate those
for numbers
comparable with it) and its baseline is AlexNet; here the baseline is whatever model the
caller compares with (the current champion, or a reference model). Below 1 the model errs
less (degrades less, for the relative form) than the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tai.inputs import check_class_targets
from tai.principles.reliability.corruptions import (
    SEVERITIES,
    _check_images,
    available_corruptions,
    corrupt,
)

__all__ = [
    "CorruptionErrors",
    "RobustnessResult",
    "corruption_accuracy",
    "corruption_errors",
    "paired_corruption_accuracy",
]


@dataclass(frozen=True)
class RobustnessResult:
    """Clean accuracy and accuracy per corruption and severity.

    Attributes:
        clean_accuracy: top-1 accuracy on the uncorrupted images.
        accuracy: corruption name -> accuracies, ``accuracy[name][i]`` at ``severities[i]``
            (with the default severities, index 0 is severity 1).
        severities: the severities evaluated, in order.
    """

    clean_accuracy: float
    accuracy: dict[str, list[float]]
    severities: tuple[int, ...]

    @property
    def mean_corruption_accuracy(self) -> float:
        """Mean accuracy over all corruption x severity cells."""
        cells = [a for row in self.accuracy.values() for a in row]
        return sum(cells) / len(cells)

    def as_dict(self) -> dict[str, float]:
        """Flat scalars for logging.

        Keys: ``clean_accuracy``, ``mean_corruption_accuracy``, ``<name>_s<k>`` for each
        corruption and severity ``k``, and ``<name>_mean`` (mean over its severities).
        """
        out = {
            "clean_accuracy": self.clean_accuracy,
            "mean_corruption_accuracy": self.mean_corruption_accuracy,
        }
        for name, row in self.accuracy.items():
            for severity, acc in zip(self.severities, row, strict=True):
                out[f"{name}_s{severity}"] = acc
            out[f"{name}_mean"] = sum(row) / len(row)
        return out


def _arg_validation(corruptions: Sequence[str], severities: Sequence[int], batch_size: int) -> None:
    known = available_corruptions()
    if len(corruptions) == 0:
        raise ValueError(
            f"Expected at least one corruption, but got none. Pass names from {known} "
            "or None for all of them."
        )
    unknown = [n for n in corruptions if n not in known]
    if unknown:
        raise ValueError(f"Unknown corruption(s) {unknown}. Expected names from {known}.")
    if len(set(corruptions)) != len(corruptions):
        raise ValueError(f"Expected distinct corruption names, but got {list(corruptions)}.")
    if len(severities) == 0 or any(
        isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES for s in severities
    ):
        raise ValueError(
            f"Expected `severities` to be a non-empty sequence of integers from {SEVERITIES}, "
            f"but got {list(severities)!r}."
        )
    if len(set(severities)) != len(severities):
        raise ValueError(f"Expected distinct severities, but got {list(severities)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be an integer >= 1, but got {batch_size!r}.")


def _tensor_validation(images: Tensor, target: Tensor) -> None:
    _check_images(images)  # the same rules as corrupt(), checked once before the clean pass
    check_class_targets(images, target, name="target")


@torch.no_grad()
def _accuracy(
    predict: Callable[[Tensor], Tensor], images: Tensor, target: Tensor, batch_size: int
) -> float:
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        logits = predict(batch)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != len(batch):
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"Expected `predict` to return logits of shape ({len(batch)}, num_classes) "
                f"for a batch of {len(batch)} images, but got {shape}."
            )
        labels = target[start : start + batch_size].to(logits.device)
        correct += int((logits.argmax(dim=1) == labels).sum())
    return correct / images.shape[0]


def corruption_accuracy(
    predict: Callable[[Tensor], Tensor],
    images: Tensor,
    target: Tensor,
    *,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    batch_size: int = 256,
    seed: int = 0,
) -> RobustnessResult:
    """Top-1 accuracy on clean and corrupted copies of ``images``.

    ``predict`` runs under ``torch.no_grad`` on batches of at most ``batch_size`` images;
    put the model in eval mode and on the images' device before. Each (corruption,
    severity) corrupts the whole set once with
    :func:`tai.principles.reliability.corruptions.corrupt` and ``seed``,
    so the result does not depend on ``batch_size``; memory is one corrupted copy of
    ``images`` plus one batch of model activations.

    Args:
        predict: maps a batch ``(B, C, H, W)`` in ``[0, 1]`` to logits ``(B, K)``; apply the
            model's normalisation inside it.
        images: ``(N, C, H, W)`` float tensor in ``[0, 1]``, ``C`` = 1 or 3.
        target: ``(N,)`` integer class indices.
        corruptions: names to evaluate; ``None`` for all of
            :func:`tai.principles.reliability.corruptions.available_corruptions`.
        severities: severities to evaluate, from 1..5.
        batch_size: images per ``predict`` call.
        seed: seed of the random corruptions.

    Returns:
        A :class:`RobustnessResult`.

    Raises:
        ValueError: for invalid arguments or tensors, or if ``predict`` returns something
            other than ``(B, K)`` logits.

    Example:
        A "model" that calls an image class 1 when its mean brightness is above 0.5; lower
        contrast pulls every image towards its mean, so its decisions do not change.

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> images = torch.rand(8, 1, 16, 16) * torch.linspace(0.4, 1.6, 8)[:, None, None, None]
        >>> images = images.clamp(0, 1)
        >>> def predict(x):
        ...     bright = x.mean(dim=(1, 2, 3))
        ...     return torch.stack([0.5 - bright, bright - 0.5], dim=1)
        >>> target = predict(images).argmax(dim=1)
        >>> result = corruption_accuracy(
        ...     predict, images, target, corruptions=["contrast"], severities=[1, 5]
        ... )
        >>> result.accuracy
        {'contrast': [1.0, 1.0]}
        >>> list(result.as_dict())[2:]
        ['contrast_s1', 'contrast_s5', 'contrast_mean']
    """
    if isinstance(corruptions, str):
        raise ValueError(
            f"Expected `corruptions` to be a sequence of names, but got the string "
            f"{corruptions!r}. Wrap it in a list: [{corruptions!r}]."
        )
    names = available_corruptions() if corruptions is None else list(corruptions)
    severities = tuple(severities)
    _arg_validation(names, severities, batch_size)
    _tensor_validation(images, target)

    return _on_shared_corruptions([predict], images, target, names, severities, batch_size, seed)[0]


def paired_corruption_accuracy(
    predicts: Sequence[Callable[[Tensor], Tensor]],
    images: Tensor,
    target: Tensor,
    *,
    corruptions: Sequence[str],
    severities: Sequence[int] = SEVERITIES,
    batch_size: int = 256,
    seed: int = 0,
) -> list[RobustnessResult]:
    """:func:`corruption_accuracy` of several models on the very same corrupted images.

    Each (corruption, severity) copy is made once and classified by every model, so the
    models' errors compare cell by cell: the precondition of :func:`corruption_errors`
    (a model and its baseline measured on the same images).

    Returns:
        One :class:`RobustnessResult` per model, in the order of ``predicts``.
    """
    names = list(corruptions)
    severities = tuple(severities)
    _arg_validation(names, severities, batch_size)
    _tensor_validation(images, target)
    return _on_shared_corruptions(predicts, images, target, names, severities, batch_size, seed)


def _on_shared_corruptions(
    predicts: Sequence[Callable[[Tensor], Tensor]],
    images: Tensor,
    target: Tensor,
    names: list[str],
    severities: tuple[int, ...],
    batch_size: int,
    seed: int,
) -> list[RobustnessResult]:
    clean = [_accuracy(p, images, target, batch_size) for p in predicts]
    accuracy: list[dict[str, list[float]]] = [{name: [] for name in names} for _ in predicts]
    for name in names:
        for s in severities:
            corrupted = corrupt(images, name, s, seed=seed)
            for table, predict in zip(accuracy, predicts, strict=True):
                table[name].append(_accuracy(predict, corrupted, target, batch_size))
    return [
        RobustnessResult(clean_accuracy=c, accuracy=a, severities=severities)
        for c, a in zip(clean, accuracy, strict=True)
    ]


@dataclass(frozen=True)
class CorruptionErrors:
    """Corruption errors of a model relative to a baseline (Hendrycks & Dietterich 2019).

    Attributes:
        ce: corruption name -> CE, summed errors of the model over summed errors of the
            baseline.
        relative_ce: corruption name -> relative CE, the same after subtracting each
            model's clean error from every severity.
        mce: mean of ``ce`` over the corruptions.
        relative_mce: mean of ``relative_ce`` over the corruptions.
    """

    ce: dict[str, float]
    relative_ce: dict[str, float]
    mce: float
    relative_mce: float

    def as_dict(self) -> dict[str, float]:
        """Flat scalars for logging: ``mce``, ``relative_mce``, ``ce_<name>`` and
        ``relative_ce_<name>`` per corruption."""
        out = {"mce": self.mce, "relative_mce": self.relative_mce}
        out.update({f"ce_{name}": value for name, value in self.ce.items()})
        out.update({f"relative_ce_{name}": value for name, value in self.relative_ce.items()})
        return out


def _errors_by_severity(result: RobustnessResult, which: str) -> dict[str, dict[int, float]]:
    if not isinstance(result, RobustnessResult):
        raise ValueError(
            f"Expected `{which}` to be a RobustnessResult (from corruption_accuracy), but got "
            f"{type(result).__name__}."
        )
    errors: dict[str, dict[int, float]] = {}
    for name, row in result.accuracy.items():
        if len(row) != len(result.severities):
            raise ValueError(
                f"`{which}` has {len(row)} accuracies for {name!r} but {len(result.severities)} "
                f"severities {result.severities}; a RobustnessResult needs one per severity."
            )
        errors[name] = {s: 1.0 - a for s, a in zip(result.severities, row, strict=True)}
    return errors


def _check_comparable(result: RobustnessResult, baseline: RobustnessResult) -> None:
    if set(result.accuracy) != set(baseline.accuracy):
        only_model = sorted(set(result.accuracy) - set(baseline.accuracy))
        only_baseline = sorted(set(baseline.accuracy) - set(result.accuracy))
        raise ValueError(
            "Expected the model and the baseline to be evaluated on the same corruptions, "
            f"but only the model has {only_model} and only the baseline has {only_baseline}. "
            "Evaluate both with the same `corruptions`."
        )
    if not result.accuracy:
        raise ValueError("Expected at least one corruption in the results, but got none.")
    if set(result.severities) != set(baseline.severities):
        raise ValueError(
            f"Expected the model and the baseline to be evaluated at the same severities, but "
            f"got {result.severities} and {baseline.severities}. Evaluate both with the same "
            "`severities`."
        )


def corruption_errors(result: RobustnessResult, baseline: RobustnessResult) -> CorruptionErrors:
    """CE, relative CE, mCE and relative mCE of ``result`` against ``baseline``.

    Both results must cover the same corruptions and severities (the order may differ);
    errors are ``1 - accuracy``. The formulas are in the module docstring.

    Args:
        result: the model's :class:`RobustnessResult`.
        baseline: the baseline model's :class:`RobustnessResult` on the same data.

    Returns:
        A :class:`CorruptionErrors`, corruptions in the order of ``result``.

    Raises:
        ValueError: if the corruptions or severities differ, or the baseline makes no error
            on a corruption at any severity (CE undefined), or its corrupted errors do not
            exceed its clean error (relative CE undefined).

    Example:
        >>> model = RobustnessResult(0.9, {"fog": [0.8, 0.6]}, (1, 2))
        >>> baseline = RobustnessResult(0.8, {"fog": [0.6, 0.4]}, (1, 2))
        >>> errors = corruption_errors(model, baseline)
        >>> round(errors.mce, 4)  # (0.2 + 0.4) / (0.4 + 0.6)
        0.6
        >>> round(errors.relative_mce, 4)  # (0.6 - 2 * 0.1) / (1.0 - 2 * 0.2)
        0.6667
    """
    ce = corruption_error_ratios(result, baseline)
    relative_ce = relative_corruption_error_ratios(result, baseline)
    return CorruptionErrors(
        ce=ce,
        relative_ce=relative_ce,
        mce=sum(ce.values()) / len(ce),
        relative_mce=sum(relative_ce.values()) / len(relative_ce),
    )


def corruption_error_ratios(
    result: RobustnessResult, baseline: RobustnessResult
) -> dict[str, float]:
    """CE per corruption: the model's errors summed over severities over the baseline's.

    Raises:
        ValueError: the results are not comparable, or the baseline makes no error on a
            corruption at any severity (CE, a ratio to its errors, is undefined).
    """
    errors, base = _comparable_errors(result, baseline)
    ce: dict[str, float] = {}
    for name, by_severity in errors.items():
        base_total = sum(base[name][s] for s in by_severity)
        if base_total <= 0:
            raise ValueError(
                f"The baseline makes no error on {name!r} at severities {result.severities} "
                "(its summed error is 0), so CE, a ratio to it, is undefined. Use a baseline "
                "that is not perfect on this data, or leave the corruption out."
            )
        ce[name] = sum(by_severity.values()) / base_total
    return ce


def relative_corruption_error_ratios(
    result: RobustnessResult, baseline: RobustnessResult
) -> dict[str, float]:
    """Relative CE per corruption: the model's degradation from its clean error, summed
    over severities, over the baseline's.

    Raises:
        ValueError: the results are not comparable, or the corruption does not degrade the
            baseline (the relative CE, a ratio to that degradation, is undefined).
    """
    errors, base = _comparable_errors(result, baseline)
    clean, base_clean = 1.0 - result.clean_accuracy, 1.0 - baseline.clean_accuracy
    n = len(result.severities)
    relative: dict[str, float] = {}
    for name, by_severity in errors.items():
        base_degradation = sum(base[name][s] for s in by_severity) - n * base_clean
        if base_degradation <= 0:
            raise ValueError(
                f"The baseline's error on {name!r} does not exceed its clean error "
                f"(sum over severities of E_s - E_clean = {base_degradation:.4g}), so the "
                "relative CE, a ratio to that degradation, is undefined. Use a baseline that "
                "this corruption degrades, or leave the corruption out."
            )
        relative[name] = (sum(by_severity.values()) - n * clean) / base_degradation
    return relative


def _comparable_errors(
    result: RobustnessResult, baseline: RobustnessResult
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    errors = _errors_by_severity(result, "result")
    base = _errors_by_severity(baseline, "baseline")
    _check_comparable(result, baseline)
    return errors, base
