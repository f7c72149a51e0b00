"""Model evaluation: every TAI metric on the test split, as a TAI report."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.preflight import RunInputs
from flows.progress import current
from flows.tasks._retry import retry_transient
from flows.tasks.training import TrainedModel
from infra.integrity import WEIGHTS_SHA256_TAG
from infra.mlflow_store import MlflowStore, ModelVersionInfo
from infra.settings import Settings
from tai.data.card import image_groups
from tai.data.profile import scan_dataset
from tai.evaluation.evaluate import Evaluation, evaluate_model
from tai.evaluation.inference import model_embeddings, predict_logits
from tai.gates.evidence import champion_comparisons
from tai.gates.policy import GatePolicy
from tai.modeling.models import build_model
from tai.modeling.temperature import TemperatureScaledModel
from tai.principles.autonomy.selective import abstention_threshold
from tai.principles.reliability.temperature import TemperatureFit, fit_temperature


@dataclass(frozen=True)
class CalibratedModel:
    """The model that gets registered, the temperature fit that made it, and the
    confidence below which it defers to a person (chosen on validation)."""

    model: TemperatureScaledModel
    fit: TemperatureFit
    abstention_threshold: float


@task(cache_policy=NO_CACHE)
def calibrate(trained: TrainedModel, target_coverage: float) -> CalibratedModel:
    """Fit temperature scaling on the validation split, then the abstention threshold
    that answers at least ``target_coverage`` of the validation images."""
    val = trained.data.splits["val"]
    logits = predict_logits(trained.module.model, val.images)
    fit = fit_temperature(logits, val.targets)
    threshold = abstention_threshold(
        (logits / fit.temperature).softmax(1), val.targets, target_coverage=target_coverage
    )
    get_run_logger().info(
        "temperature %.3f: validation ECE %.4f -> %.4f; defer below confidence %.4f",
        fit.temperature,
        fit.ece_before,
        fit.ece_after,
        threshold,
    )
    model = TemperatureScaledModel(trained.module.model, fit.temperature).eval()
    return CalibratedModel(model, fit, threshold)


@dataclass(frozen=True)
class Champion:
    """The current champion, rebuilt from its verified weights."""

    version: str
    model: torch.nn.Module


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def load_champion(store: MlflowStore) -> Champion | None:
    """The current champion, to compare the new model with; None before the first."""
    champion = store.champion()
    if champion is None:
        return None
    return Champion(champion.version, rebuild_model(store, champion)[0])


def rebuild_model(store: MlflowStore, version: ModelVersionInfo) -> tuple[torch.nn.Module, dict]:
    """A registered version's deployed module from its weights (eval mode) and the config
    that rebuilt it; refused if the weights' sha256 differs from the one recorded at
    registration (:class:`infra.integrity.IntegrityError`)."""
    state, config = store.load_weights(
        version.run_id, expected_sha256=version.tags.get(WEIGHTS_SHA256_TAG)
    )
    model = build_model(
        config["model"], in_channels=config["in_channels"], num_classes=config["num_classes"]
    )
    scaled = TemperatureScaledModel(model, config["temperature"])
    scaled.load_state_dict(state)
    return scaled.eval(), config


def weights_config(calibrated: CalibratedModel, image_size: Sequence[int]) -> dict:
    """What rebuilds the deployed module from its state dict, and the input it takes."""
    model = calibrated.model.model
    return {
        "model": model.name,
        "in_channels": model.in_channels,
        "num_classes": model.head.out_features,
        "temperature": calibrated.fit.temperature,
        "image_size": [int(s) for s in image_size],
    }


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over a module's parameters and buffers (names, shapes, dtypes, values): the
    identity of a trained model, the same for the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        # Bytes of the values as stored (a uint8 view works for every dtype, bfloat16 too).
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_embeddings(
    model: torch.nn.Module, images: torch.Tensor, cache_dir: Path, *, data_commit: str
) -> torch.Tensor:
    """The model's test embeddings, cached by (model weights, data commit, images).

    The same model evaluated again on the same commit (a retried run, a re-evaluation)
    reads them back; a half-written file is never read (write, then rename).
    """
    key = hashlib.sha256(
        f"{weights_digest(model)}-{data_commit}-{tuple(images.shape)}".encode()
        + images.numpy().tobytes()[:1_000_000]
    ).hexdigest()[:32]
    path = cache_dir / "embeddings" / f"{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    embeddings = model_embeddings(model, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(embeddings, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return embeddings


@task(cache_policy=NO_CACHE)
def evaluate(
    calibrated: CalibratedModel,
    trained: TrainedModel,
    settings: Settings,
    inputs: RunInputs,
    data_commit: str,
    champion: Champion | None = None,
) -> Evaluation:
    """Run every registered check on the held-out test split with the deployed model."""
    policy = inputs.policy
    test = trained.data.splits["test"]
    groups = expected_groups = None
    if settings.group_column:
        records = scan_dataset(trained.data.root, settings.dataset)
        every = image_groups(trained.data.root, settings.dataset, records, settings.group_column)
        group_of = dict(zip((r.path for r in records), every, strict=True))
        groups = [group_of[p] for p in test.paths]
        expected_groups = sorted(set(every))
    train = trained.data.splits["train"]
    embeddings = cached_embeddings(
        calibrated.model, test.images, settings.cache_dir, data_commit=data_commit
    )
    return evaluate_model(
        calibrated.model,
        test.images,
        test.targets,
        classes=trained.data.classes,
        options=inputs.options,
        members=(train.images, train.targets),
        champion=champion.model if champion else None,
        groups=groups,
        group_column=settings.group_column,
        expected_groups=expected_groups,
        abstention_threshold=calibrated.abstention_threshold,
        temperature=calibrated.fit.temperature,
        confidence=policy.confidence,
        bound_metrics=policy.bound_metrics(),
        embeddings=embeddings,
        seed=settings.seed,
        observe=current().check,
    )


def compare_with_champion(evaluation: Evaluation, policy: GatePolicy, seed: int):
    """The paired comparisons the policy's champion gates judge; None without a champion."""
    if evaluation.champion_probs is None:
        return None
    return champion_comparisons(
        policy.comparison_metrics(),
        evaluation.champion_probs,
        evaluation.probs,
        evaluation.targets,
        confidence=policy.confidence,
        seed=seed,
    )
