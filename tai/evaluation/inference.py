"""The model's outputs on a split, in batches of bounded memory (in memory or streamed)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


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


@torch.no_grad()
def stream_outputs(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    embeddings: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Logits and (with ``embeddings``) penultimate-layer embeddings of every image of
    ``dataset`` (items ``(image, target)``), read in batches: memory holds one batch of
    images and the outputs, never the split."""
    model.eval()
    logits, embedded = [], []
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    with torch.no_grad():
        for images, _ in loader:
            logits.append(model(images))
            if embeddings:
                embedded.append(model.embed(images))
    if not logits:
        raise ValueError("the dataset holds no images; nothing to predict")
    return torch.cat(logits), torch.cat(embedded) if embeddings else None
