"""Model evaluation: every TAI metric on the test split, as a TAI report."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.tasks._retry import retry_transient
from flows.tasks.training import TrainedModel
from infra.mlflow_store import MlflowStore
from infra.settings import Settings
from tai.evaluation import Evaluation, evaluate_model, predict_logits
from tai.models import build_model
from tai.robustness import RobustnessResult
from tai.temperature import TemperatureFit, TemperatureScaledModel, fit_temperature


@dataclass(frozen=True)
class CalibratedModel:
    """The model that gets registered, and the temperature fit that made it."""

    model: TemperatureScaledModel
    fit: TemperatureFit


@task(cache_policy=NO_CACHE)
def calibrate(trained: TrainedModel) -> CalibratedModel:
    """Fit temperature scaling on the validation split: the model that gets deployed."""
    val = trained.data.splits["val"]
    fit = fit_temperature(predict_logits(trained.module.model, val.images), val.targets)
    get_run_logger().info(
        "temperature %.3f: validation ECE %.4f -> %.4f",
        fit.temperature,
        fit.ece_before,
        fit.ece_after,
    )
    return CalibratedModel(
        TemperatureScaledModel(trained.module.model, fit.temperature).eval(), fit
    )


@dataclass(frozen=True)
class Champion:
    """The current champion, rebuilt, and its robustness on its own test split."""

    version: str
    model: torch.nn.Module
    robustness: RobustnessResult


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def load_champion(store: MlflowStore) -> Champion | None:
    """The current champion, to compare the new model with; None before the first."""
    champion = store.champion()
    if champion is None:
        return None
    report = store.load_json(champion.run_id, "tai/tai_report.json")["robustness"]
    robustness = RobustnessResult(
        clean_accuracy=report["clean_accuracy"],
        accuracy=report["accuracy"],
        severities=tuple(report["severities"]),
    )
    return Champion(champion.version, _rebuild(store, champion.run_id), robustness)


def _rebuild(store: MlflowStore, run_id: str) -> torch.nn.Module:
    state, config = store.load_weights(run_id)
    model = build_model(
        config["model"], in_channels=config["in_channels"], num_classes=config["num_classes"]
    )
    scaled = TemperatureScaledModel(model, config["temperature"])
    scaled.load_state_dict(state)
    return scaled.eval()


def weights_config(calibrated: CalibratedModel) -> dict:
    """What rebuilds the deployed module from its state dict."""
    model = calibrated.model.model
    return {
        "model": model.name,
        "in_channels": model.in_channels,
        "num_classes": model.head.out_features,
        "temperature": calibrated.fit.temperature,
    }


@task(cache_policy=NO_CACHE)
def evaluate(
    calibrated: CalibratedModel,
    trained: TrainedModel,
    settings: Settings,
    champion: Champion | None = None,
) -> Evaluation:
    """Run the TAI checks on the held-out test split with the deployed model."""
    test = trained.data.splits["test"]
    return evaluate_model(
        calibrated.model,
        test.images,
        test.targets,
        classes=trained.data.classes,
        robustness_budget=max(settings.tai_budget, 8),
        temperature=calibrated.fit,
        reference_model=champion.model if champion else None,
        reference_robustness=champion.robustness if champion else None,
        seed=settings.seed,
    )
