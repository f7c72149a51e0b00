"""Model engineering: Lightning training with the TAI callbacks, logged to MLflow."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pytorch_lightning.loggers import MLFlowLogger

from callbacks import CalibrationCallback, PrototypeExplanationCallback, RobustnessCallback
from flows.distributed import trainer_strategy
from flows.progress import current
from infra.memory import fix_mmap_threshold_for, frozen_heap
from infra.settings import Settings
from tai.modeling.datamodule import FolderDataModule
from tai.modeling.models import default_image_size
from tai.modeling.module import ClassifierModule


class ProgressCallback(pl.Callback):
    """Reports training to the run's progress display (epoch, batch, loss)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        current().training_started(int(trainer.max_epochs or 1), int(trainer.num_training_batches))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        current().training_step(trainer.current_epoch, batch_idx, float(loss))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        current().training_done()


@dataclass
class TrainedModel:
    module: ClassifierModule
    data: FolderDataModule
    callback_metrics: dict[str, float]


def tai_callbacks(
    budget: int, corruptions: Sequence[str], batch_size: int = 64
) -> list[pl.Callback]:
    """The TAI checks that run during validation, each within ``budget`` samples and
    ``batch_size`` images a pass of the model."""
    return [
        CalibrationCallback(n_bins=15, budget=budget),
        RobustnessCallback(
            corruptions=corruptions, budget=max(budget // 2, 8), batch_size=batch_size
        ),
        PrototypeExplanationCallback(per_class=1, budget=budget, batch_size=batch_size),
    ]


def make_trainer(
    settings: Settings, *, logger: pl.loggers.Logger | bool, callbacks: list[pl.Callback]
) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=settings.max_epochs,
        logger=logger,
        callbacks=callbacks,
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=trainer_strategy(settings.strategy),
        deterministic=True,
        inference_mode=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(settings.workspace_dir / "lightning"),
        log_every_n_steps=10,
    )


def requested_image_size(settings: Settings) -> int | tuple[int, int]:
    """``TAI_IMAGE_SIZE``; unset (0), the size pretrained torchvision weights were made for
    (224 for most), else 0: the data's most common size."""
    if settings.image_size or not settings.pretrained:
        return settings.image_size
    return default_image_size(settings.model, settings.pretrained) or 0


@task(cache_policy=NO_CACHE)
def train_model(settings: Settings, root: Path, run_id: str) -> TrainedModel:
    """Fit the configured model on the commit's train split, validating on val."""
    trained = fit_model(settings, root, run_id)
    get_run_logger().info(
        "trained %s for %d epochs: val_acc %.4f",
        settings.model,
        settings.max_epochs,
        trained.callback_metrics.get("val_acc", float("nan")),
    )
    return trained


def fit_model(settings: Settings, root: Path, run_id: str | None) -> TrainedModel:
    """The training itself; ``run_id`` None logs nothing (a process of rank > 0 under an
    external launcher, see :mod:`flows.distributed`)."""
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    data = FolderDataModule(
        root,
        settings.dataset,
        batch_size=settings.batch_size,
        max_images_per_split=settings.max_images_per_split,
        image_size=requested_image_size(settings),
        augment=settings.augment,
        num_workers=settings.num_workers,
        seed=settings.seed,
    )
    data.setup()
    module = ClassifierModule(
        settings.model,
        in_channels=data.in_channels,
        num_classes=data.num_classes,
        classes=data.classes,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        image_size=data.input_size,
        pretrained=settings.pretrained or None,
        freeze_backbone=settings.freeze_backbone,
        unfreeze_after_epochs=settings.unfreeze_after_epochs,
    )
    logger = (
        MLFlowLogger(
            experiment_name=settings.experiment_name,
            tracking_uri=settings.tracking_uri,
            run_id=run_id,
        )
        if run_id
        else False
    )
    trainer = make_trainer(
        settings,
        logger=logger,
        callbacks=[
            *tai_callbacks(settings.tai_budget, settings.corruptions, settings.batch_size),
            ProgressCallback(),
        ],
    )
    fix_mmap_threshold_for(data.input_size)  # large images only: memory over speed
    with frozen_heap():
        trainer.fit(module, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return TrainedModel(module=module, data=data, callback_metrics=metrics)
