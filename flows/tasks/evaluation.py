"""Model evaluation: every TAI metric on the test split, as a TAI report."""

from __future__ import annotations

import hashlib
import logging
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
from tai.check import EvalContext, Members
from tai.data.card import image_groups
from tai.data.images import FolderImages
from tai.data.profile import scan_dataset
from tai.evaluation.evaluate import Evaluation, run_checks
from tai.evaluation.inference import stream_outputs
from tai.evaluation.registry import evaluation_checks
from tai.gates.evidence import champion_comparisons
from tai.gates.policy import GatePolicy
from tai.modeling.memory_format import to_channels_last
from tai.modeling.models import model_config, model_from_config
from tai.modeling.temperature import TemperatureScaledModel
from tai.principles.autonomy.selective import abstention_threshold
from tai.principles.reliability.temperature import TemperatureFit, fit_temperature

log = logging.getLogger(__name__)


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
    val = trained.data.eval_split("val")
    logits, _ = stream_outputs(
        trained.module.model,
        val,
        batch_size=trained.data.batch_size,
        num_workers=trained.data.num_workers,
        embeddings=False,
    )
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
    scaled = TemperatureScaledModel(model_from_config(config), config["temperature"])
    scaled.load_state_dict(state)
    to_channels_last(scaled)  # on the CPU, as the pipeline's trained model is
    return scaled.eval(), config


def weights_config(calibrated: CalibratedModel, image_size: Sequence[int]) -> dict:
    """What rebuilds the deployed module from its state dict (architecture, factory,
    pretrained weights' digest, classes, input size) and its temperature."""
    config = {**model_config(calibrated.model.model), "temperature": calibrated.fit.temperature}
    if config["image_size"] is None:  # a model built without a size takes the data's
        config["image_size"] = [int(s) for s in image_size]
    return config


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


def cached_outputs(
    model: torch.nn.Module,
    split: FolderImages,
    cache_dir: Path,
    *,
    data_commit: str,
    num_workers: int = 0,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits and embeddings of a split, cached by (model weights, data
    commit, the split's images and format), computed ``batch_size`` images at a time.

    The same model evaluated again on the same commit (a retried run, a re-evaluation)
    reads them back; a half-written file is never read (write, then rename).
    """
    key = hashlib.sha256(
        f"{weights_digest(model)}-{data_commit}-{split.fmt.as_dict()}-".encode()
        + "\n".join(split.paths).encode()
    ).hexdigest()[:32]
    path = cache_dir / "outputs" / f"{key}.pt"
    if path.is_file():
        cached = _read_outputs(path, len(split))
        if cached is not None:
            return cached
    logits, embeddings = stream_outputs(
        model, split, batch_size=batch_size, num_workers=num_workers
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save({"logits": logits, "embeddings": embeddings}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return logits, embeddings


def _read_outputs(path: Path, rows: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A cached (logits, embeddings) pair, or None when the file cannot be trusted.

    The cache is only a shortcut: a file that does not load (a disk error, a file someone
    edited) or does not hold one row per image is removed and the outputs are computed again.
    """
    try:
        cached = torch.load(path, weights_only=True)
        logits, embeddings = cached["logits"], cached["embeddings"]
        if not (
            isinstance(logits, torch.Tensor)
            and isinstance(embeddings, torch.Tensor)
            and len(logits) == len(embeddings) == rows
        ):
            raise ValueError(f"expected {rows} rows of logits and embeddings")
    except Exception as exc:  # noqa: BLE001 - any unreadable cache file is recomputed
        log.warning("outputs cache %s is unreadable (%s); computing the outputs again", path, exc)
        path.unlink(missing_ok=True)
        return None
    return logits, embeddings


@task(cache_policy=NO_CACHE)
def evaluate(
    calibrated: CalibratedModel,
    trained: TrainedModel,
    settings: Settings,
    inputs: RunInputs,
    data_commit: str,
    champion: Champion | None = None,
) -> Evaluation:
    """Run every registered check on the held-out test split with the deployed model.

    The split is streamed: its outputs are computed batch by batch (and cached), and a
    check reads only the images it samples.
    """
    policy = inputs.policy
    data = trained.data
    test, train = data.eval_split("test"), data.eval_split("train")
    groups = expected_groups = None
    if settings.group_column:
        records = scan_dataset(data.root, settings.dataset)
        every = image_groups(data.root, settings.dataset, records, settings.group_column)
        group_of = dict(zip((r.path for r in records), every, strict=True))
        groups = [group_of[p] for p in test.paths]
        expected_groups = sorted(set(every))
    logits, embeddings = cached_outputs(
        calibrated.model,
        test,
        settings.cache_dir,
        data_commit=data_commit,
        num_workers=settings.num_workers,
        batch_size=settings.batch_size,
    )
    champion_probs = None
    if champion is not None:
        champion_logits, _ = stream_outputs(
            champion.model,
            test,
            batch_size=settings.batch_size,
            num_workers=settings.num_workers,
            embeddings=False,
        )
        champion_probs = champion_logits.softmax(1)
    ctx = EvalContext(
        model=calibrated.model,
        classes=data.classes,
        targets=test.targets,
        probs=logits.softmax(1),
        embeddings=embeddings,
        load_images=test.images,
        members=Members(train.targets, train.images),
        champion=champion.model if champion else None,
        champion_probs=champion_probs,
        groups=groups,
        group_column=settings.group_column,
        expected_groups=expected_groups,
        abstention_threshold=calibrated.abstention_threshold,
        temperature=calibrated.fit.temperature,
        confidence=policy.confidence,
        bound_metrics=frozenset(policy.bound_metrics()),
        seed=settings.seed,
    )
    return run_checks(evaluation_checks(inputs.options), ctx, observe=current().check)


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
