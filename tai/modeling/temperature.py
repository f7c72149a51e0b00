"""A classifier whose logits are divided by a fitted temperature (Guo et al. 2017).

The served model needs only this; the fit itself is
:func:`tai.principles.reliability.temperature.fit_temperature`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["TemperatureScaledModel", "apply_temperature"]


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature``: the recalibrated logits (apply ``softmax`` for probabilities).

    Args:
        logits: float tensor of logits, classes in the last dimension.
        temperature: a finite ``T > 0``, e.g. ``fit_temperature(...).temperature``.

    Returns:
        A tensor like ``logits``; its arg-max is unchanged.

    Raises:
        ValueError: if ``temperature`` is not a finite positive number or ``logits`` is not
            a floating point tensor.

    Example:
        >>> import torch
        >>> apply_temperature(torch.tensor([[4.0, -2.0]]), 2.0)
        tensor([[ 2., -1.]])
    """
    _temperature_validation(temperature)
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise ValueError(
            "Expected `logits` to be a floating point torch tensor, but got "
            f"{getattr(logits, 'dtype', type(logits).__name__)}. Pass the model's raw output."
        )
    return logits / temperature


class TemperatureScaledModel(nn.Module):
    """A classifier whose logits are divided by a fitted temperature.

    The temperature is a buffer, so it is saved and loaded with the state dict (key
    ``"temperature"``, beside the wrapped model's keys under ``"model."``), moves with
    ``.to(device)`` and is not trained. If the wrapped model has an ``embed`` method, the
    wrapper exposes it unchanged (temperature scaling does not touch the embedding);
    otherwise the wrapper has no ``embed`` attribute either.

    Args:
        model: the classifier; ``model(x)`` returns logits.
        temperature: a finite ``T > 0``, e.g. ``fit_temperature(val_logits, val_y).temperature``.

    Raises:
        ValueError: if ``temperature`` is not a finite positive number.

    Example:
        >>> import torch
        >>> scaled = TemperatureScaledModel(torch.nn.Linear(3, 2), temperature=2.0)
        >>> sorted(scaled.state_dict())
        ['model.bias', 'model.weight', 'temperature']
        >>> float(scaled.temperature)
        2.0
    """

    temperature: Tensor

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        _temperature_validation(temperature)
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: Tensor) -> Tensor:
        """The wrapped model's logits divided by the temperature."""
        # One named input, not *args: torch.export (MLflow's pt2 format) derives the
        # dynamic batch dimension from the signature.
        return self.model(x) / self.temperature

    @property
    def embed(self) -> Callable[..., Tensor]:
        """The wrapped model's ``embed`` method; an ``AttributeError`` if it has none."""
        # An AttributeError raised here makes Python fall back to nn.Module.__getattr__, which
        # raises its own "has no attribute 'embed'": hasattr(scaled, "embed") is then False.
        embed = getattr(self.model, "embed", None)
        if embed is None:
            raise AttributeError("embed")
        return embed


# --------------------------------------------------------------------------- helpers


def _temperature_validation(temperature: float) -> None:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(
            f"Expected `temperature` to be a finite number > 0, but got {temperature!r}. "
            "Pass the temperature from fit_temperature(val_logits, val_target).temperature."
        )
