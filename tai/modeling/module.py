"""The LightningModule that trains any model of :func:`tai.modeling.models.build_model`."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from tai.modeling.memory_format import to_channels_last
from tai.modeling.models import TaiModel, build_model


class ClassifierModule(pl.LightningModule):
    """Cross-entropy training of a classifier with AdamW and a one-cycle schedule.

    ``validation_step`` returns the batch's logits, so TAI callbacks reuse them instead
    of running the model a second time.

    Args:
        model_name: ``TAI_MODEL`` (see :func:`tai.modeling.models.build_model`).
        in_channels: 1 for grayscale, 3 for RGB.
        num_classes: number of classes.
        classes: the class names, stored with the checkpoint for readable reports.
        learning_rate: peak learning rate.
        seed: seeds the weight initialisation.
        image_size: ``(H, W)`` of the images the model takes.
        pretrained: ``TAI_PRETRAINED``: torchvision weights or a state dict file.
        freeze_backbone: train only the head.
        unfreeze_after_epochs: with ``freeze_backbone``, train the whole model from this
            epoch on (``None``: the backbone stays frozen).
    """

    def __init__(
        self,
        model_name: str,
        in_channels: int,
        num_classes: int,
        classes: list[str] | None = None,
        learning_rate: float = 2e-3,
        seed: int = 0,
        image_size: tuple[int, int] | None = None,
        pretrained: str | None = None,
        freeze_backbone: bool = False,
        unfreeze_after_epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model: TaiModel = build_model(
            model_name,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            seed=seed,
            pretrained=pretrained,
            freeze_backbone=freeze_backbone,
        )
        self.classes = classes or [str(i) for i in range(num_classes)]

    def on_train_epoch_start(self) -> None:
        after = self.hparams.unfreeze_after_epochs
        if self.model.backbone_frozen and after is not None and self.current_epoch >= after:
            self.model.unfreeze_backbone()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def embed(self, x: Tensor) -> Tensor:
        return self.model.embed(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        logits = self(x)
        # sync_dist: on several processes, the mean over all of them (one process: as is).
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True, sync_dist=True)
        return {"logits": logits.detach()}

    def configure_model(self) -> None:
        # Channels-last convolutions for a fit on the CPU: the 5-epoch fit of the small CNN
        # on the MNIST sample took 4.6 s instead of 5.8 s (benchmarks/channels_last.py
        # --fit; tai.modeling.memory_format).
        # Here, before the strategy moves the model or wraps it (DDP lays out its gradient
        # buckets after the parameters). Not on GPUs: not measured there.
        if self.trainer.strategy.root_device.type == "cpu":
            to_channels_last(self.model)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate)
        steps = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.learning_rate, total_steps=max(int(steps), 1)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
