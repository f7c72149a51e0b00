"""A model's convolutions in channels-last layout for a block of passes on the CPU.

PyTorch's CPU convolutions ran faster with channels-last (NHWC) weights than with the
default NCHW layout for every model and kind of work measured here
(`benchmarks/channels_last.py`, BENCHMARKS.md, two cores): for the small CNN on 28x28
images, 2,560 images through the model 0.42 s with NCHW weights and 0.29 s with
channels-last ones (1.43x), PGD's input gradients 1.35x, training steps 1.54x; for
torchvision's ResNet-18 at 224x224, 1.12-1.20x; nothing was slower.

The outputs are the same up to float rounding (the tests hold them to 1e-5).
Nothing is copied but the weights, and :func:`channels_last_on_cpu` puts them back in
their own layout afterwards, so a fit that goes on after a check goes on exactly as it
would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _converts(module: nn.Module) -> bool:
    """Whether :func:`to_channels_last` changes ``module``: 4-D weights, all on the
    CPU, all in the default layout (a model already channels-last is left as it is)."""
    weights = [p for p in module.parameters() if p.dim() == 4]
    return bool(weights) and all(
        p.device.type == "cpu" and p.is_contiguous() and not _channels_last(p) for p in weights
    )


def _channels_last(t: torch.Tensor) -> bool:
    # A (C_out, 1, k, k) kernel counts as contiguous in both layouts (torch ignores the
    # size-1 dimension), so the strides themselves tell them apart.
    _, c, h, w = t.shape
    return t.stride() == (h * w * c, 1, w * c, c)


def to_channels_last(module: nn.Module) -> bool:
    """Put ``module``'s 4-D parameters and buffers in channels-last layout, in place.

    Returns whether it changed anything: a module with no 4-D weights, with weights off
    the CPU or already channels-last is left as it is. The Parameter objects stay the
    same, so an optimiser built before still holds them.
    """
    if not _converts(module):
        return False
    module.to(memory_format=torch.channels_last)
    return True


@contextmanager
def channels_last_on_cpu(module: nn.Module) -> Iterator[None]:
    """Within the block, ``module`` is channels-last (:func:`to_channels_last`).

    On leaving it (also on an error) a module the block converted is contiguous again,
    with the same values.
    """
    if not to_channels_last(module):
        yield
        return
    try:
        yield
    finally:
        module.to(memory_format=torch.contiguous_format)
