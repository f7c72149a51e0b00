"""PrototypeExplanationCallback: class prototypes, their attributions and faithfulness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from callbacks._base import TaiCheckCallback, _check_positive_int
from tai.principles.transparency.attribution_methods import METHODS, attribute
from tai.principles.transparency.explain import deletion_auc
from tai.principles.transparency.prototypes import Prototypes, select_prototypes
from tai.report.figures.explanations import prototype_figure


@dataclass(frozen=True)
class PrototypeExplanation:
    """Prototypes found in one validation epoch and how faithful their attributions are."""

    prototypes: Prototypes
    deletion_auc: float
    convergence_delta: float


def embedding_function(pl_module: nn.Module, layer: str | None) -> Callable[[Tensor], Tensor]:
    """The penultimate-layer embedding: ``pl_module.embed`` or a forward hook on ``layer``.

    Raises:
        ValueError: ``layer`` is not a submodule, or neither is given.
    """
    if layer is None:
        if callable(getattr(pl_module, "embed", None)):
            return pl_module.embed
        raise ValueError(
            f"{type(pl_module).__name__} has no `embed(x)` method; pass "
            "`embedding_layer=` the name of its penultimate layer (see model.named_modules())"
        )
    modules = dict(pl_module.named_modules())
    if layer not in modules:
        raise ValueError(
            f"`embedding_layer` {layer!r} is not a submodule of {type(pl_module).__name__}; "
            f"some of its layers: {', '.join(list(modules)[1:8])}"
        )

    def embed(x: Tensor) -> Tensor:
        captured: list[Tensor] = []
        handle = modules[layer].register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            pl_module(x)
        finally:
            handle.remove()
        return captured[0].flatten(1)

    return embed


class PrototypeExplanationCallback(TaiCheckCallback):
    """Per-class prototypes (k-medoids on embeddings), their attribution maps (Integrated
    Gradients by default), and the deletion AUC of those maps (lower is more faithful).

    Logs ``tai/explain/deletion_auc`` (and ``tai/explain/ig_convergence_delta`` for
    Integrated Gradients); the figure of prototypes beside their maps goes to the loggers.

    Args:
        per_class: prototypes per class.
        embedding_layer: name of the penultimate layer when the module has no ``embed``.
        method: the attribution method, one of
        :data:`tai.principles.transparency.attribution_methods.METHODS`.
        n_steps: Integrated Gradients steps.
        deletion_steps: steps of the deletion curve.
        budget: at most this many validation samples per check.
        every_n_epochs: check every n-th epoch too; ``None`` (default): the last epoch
            only. A check costs about a tenth of a training epoch of the demo (MNIST
            sample, small CNN), mostly the embeddings and Integrated Gradients.
        log_figures: log the prototype figure: ``"last"`` epoch, ``True`` every check.
        batch_size: most images in one pass of the model (embeddings, attributions,
            deletion curves).

    Raises:
        ValueError: a non-positive count or an unknown method.

    Example::

        trainer = Trainer(callbacks=[PrototypeExplanationCallback(per_class=2)])
    """

    name = "explain"

    def __init__(
        self,
        per_class: int = 1,
        *,
        embedding_layer: str | None = None,
        method: str = "integrated_gradients",
        n_steps: int = 32,
        deletion_steps: int = 20,
        budget: int = 512,
        every_n_epochs: int | None = None,
        log_figures: bool | Literal["last"] = "last",
        batch_size: int = 64,
    ) -> None:
        for arg, value in (
            ("per_class", per_class),
            ("n_steps", n_steps),
            ("deletion_steps", deletion_steps),
            ("batch_size", batch_size),
        ):
            _check_positive_int(arg, value)
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
        super().__init__(budget=budget, every_n_epochs=every_n_epochs, log_figures=log_figures)
        self.per_class = per_class
        self.embedding_layer = embedding_layer
        self.method = method
        self.n_steps = n_steps
        self.deletion_steps = deletion_steps
        self.batch_size = batch_size

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        embedding_function(pl_module, self.embedding_layer)  # fail before training, not after

    def run_check(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        images: Tensor,
        targets: Tensor,
        logits: Tensor,
        *,
        final: bool,
    ) -> PrototypeExplanation:
        device = pl_module.device
        embed = embedding_function(pl_module, self.embedding_layer)
        with torch.no_grad():  # the whole budget in one pass was gigabytes at 224x224
            embeddings = torch.cat(
                [embed(b.to(device)).cpu() for b in images.split(self.batch_size)]
            )
        # Classes with too few buffered samples are left out rather than failing training.
        counts = torch.bincount(targets)
        keep = counts[targets] >= self.per_class
        kept = torch.nonzero(keep).flatten()
        protos = select_prototypes(embeddings[kept], targets[kept], per_class=self.per_class)
        index = kept[torch.tensor(protos.all_indices())]
        x, y = images[index].to(device), targets[index].to(device)
        attributions = attribute(
            pl_module, x, y, method=self.method, n_steps=self.n_steps, batch_size=self.batch_size
        )
        maps = attributions.maps.expand_as(x)  # GradCAM gives one channel
        deletion = deletion_auc(
            pl_module, x, maps, y, steps=self.deletion_steps, batch_size=self.batch_size
        )
        delta = attributions.convergence_delta
        result = PrototypeExplanation(
            prototypes=protos,
            deletion_auc=deletion.mean,
            convergence_delta=float(delta.abs().mean()) if delta is not None else float("nan"),
        )
        logged = {"tai/explain/deletion_auc": result.deletion_auc}
        if delta is not None:
            logged["tai/explain/ig_convergence_delta"] = result.convergence_delta
        self.log_metrics(trainer, pl_module, logged)
        if self.wants_figure(trainer, final=final):
            classes = getattr(pl_module, "classes", None)
            labels = y.tolist()
            titles = [f"class {classes[t] if classes else t}" for t in labels]
            shown, heat = x.detach().cpu().clone(), maps.detach().cpu().clone()
            self.submit_figure(
                trainer, lambda: prototype_figure(shown, heat, labels, titles=titles), "prototypes"
            )
        return result
