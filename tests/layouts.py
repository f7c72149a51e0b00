"""The layout of a module's convolution weights, read from their strides (the tests' own
reading, not tai.modeling.memory_format's)."""

from __future__ import annotations

from torch import nn


def conv_layouts(module: nn.Module) -> list[str]:
    """``"nhwc"`` (channels-last) or ``"nchw"`` per 4-D parameter, in order. Strides, not
    ``is_contiguous``: a ``(C_out, 1, k, k)`` kernel is contiguous in torch's sense in
    both layouts."""
    out = []
    for p in module.parameters():
        if p.dim() == 4:
            _, c, h, w = p.shape
            out.append("nhwc" if p.stride() == (h * w * c, 1, w * c, c) else "nchw")
    return out
