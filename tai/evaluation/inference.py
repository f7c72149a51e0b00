"""The model's outputs on a split, in batches of bounded memory."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """Logits of ``images`` in batches (memory bounded), model in eval mode."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def model_embeddings(model: nn.Module, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """Penultimate-layer embeddings (``model.embed``) of ``images`` in batches, eval mode."""
    model.eval()
    return torch.cat(
        [model.embed(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )
