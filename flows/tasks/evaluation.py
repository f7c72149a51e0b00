"""Model evaluation: every TAI metric on the test split, as a TAI report."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.tasks.training import TrainedModel
from infra.settings import Settings
from tai.evaluation import Evaluation, evaluate_model, predict_logits
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


@task(cache_policy=NO_CACHE)
def evaluate(calibrated: CalibratedModel, trained: TrainedModel, settings: Settings) -> Evaluation:
    """Run the TAI checks on the held-out test split with the deployed model."""
    test = trained.data.splits["test"]
    return evaluate_model(
        calibrated.model,
        test.images,
        test.targets,
        classes=trained.data.classes,
        robustness_budget=max(settings.tai_budget, 8),
        temperature=calibrated.fit,
        seed=settings.seed,
    )
