"""Model evaluation: every TAI metric on the test split, as a TAI report."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.tasks.training import TrainedModel
from infra.settings import Settings
from tai.evaluation import Evaluation, evaluate_model


@task(cache_policy=NO_CACHE)
def evaluate(trained: TrainedModel, settings: Settings) -> Evaluation:
    """Run the TAI checks on the held-out test split with the trained model."""
    test = trained.data.splits["test"]
    return evaluate_model(
        trained.module.model,
        test.images,
        test.targets,
        classes=trained.data.classes,
        robustness_budget=max(settings.tai_budget, 8),
        seed=settings.seed,
    )
