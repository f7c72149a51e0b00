"""Monitoring tasks: the reference fitted at registration, and what a production batch
goes through (reading, the model's outputs, the assessment, the alarm, the review).

At registration (:func:`fit_monitoring`) every version gets a monitoring reference
(ATC's threshold on validation, the expected deferral rate, a sample of embeddings, the
factors of variation, noise levels; :mod:`tai.monitoring.reference`) and a detector
self-test: the policy's alarm rules on benign batches resampled from the test split and
on corrupted ones, so the false-alarm and detection rates of this very model are known.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.tasks.evaluation import CalibratedModel
from flows.tasks.training import TrainedModel
from infra.mlflow_store import MlflowStore
from tai.check import sample_indices
from tai.data.images import FolderImages
from tai.data.model_input import fit_images
from tai.data.profile import IMAGE_SUFFIXES, DatasetError, estimate_noise_sigma, load_image
from tai.evaluation.evaluate import Evaluation
from tai.evaluation.inference import model_embeddings, predict_logits, stream_outputs
from tai.gates.decision import evaluate_monitoring
from tai.gates.policy import GatePolicy
from tai.monitoring.assess import drift_rule_minimum
from tai.monitoring.reference import MonitoringReference, fit_reference
from tai.monitoring.selftest import SelfTestResult, ShiftedBatch, detector_self_test
from tai.principles.reliability.corruptions import corrupt

REFERENCE_ARTIFACT = "monitoring/reference.npz"
SELFTEST_ARTIFACT = "monitoring/selftest.json"
# Images whose noise level the reference stores (and a batch is measured on).
NOISE_SAMPLE = 300
# The self-test's shifted batches: corruptions of the test split a monitor must notice.
SELFTEST_SHIFTS = (("gaussian_noise", 4), ("contrast", 4), ("gaussian_blur", 4))
SELFTEST_SHIFT_IMAGES = 1000  # test images corrupted for each shifted batch


class MonitoringError(ValueError):
    """A production batch or the model version to monitor is unusable; the message says
    what is wrong and what to do."""


@dataclass(frozen=True)
class MonitoringFit:
    """What registration stores for monitoring: the reference and the self-test."""

    reference: MonitoringReference
    selftest: SelfTestResult | None

    def save(self, folder: Path) -> list[Path]:
        """Write the artifacts into ``folder``; returns the files."""
        folder.mkdir(parents=True, exist_ok=True)
        files = [self.reference.save(folder / Path(REFERENCE_ARTIFACT).name)]
        if self.selftest is not None:
            path = folder / Path(SELFTEST_ARTIFACT).name
            path.write_text(json.dumps(self.selftest.as_dict(), indent=2, sort_keys=True))
            files.append(path)
        return files


def alarm_rule(policy: GatePolicy) -> Callable[[dict, dict], bool]:
    """The policy's monitoring rules as the self-test's alarm: does a batch fail one?"""

    def alarm(metrics: dict, bounds: dict) -> bool:
        nan = {k: "not measured on this batch" for k, v in metrics.items() if math.isnan(v)}
        return not evaluate_monitoring(policy, metrics, bounds=bounds, not_applicable=nan).passed

    return alarm


def noise_sigmas(images: torch.Tensor, limit: int = NOISE_SAMPLE) -> np.ndarray:
    """Noise levels (the data card's estimator) of at most ``limit`` images."""
    picked = images[:limit].detach().cpu()
    arrays = picked[:, 0].numpy() if picked.shape[1] == 1 else picked.permute(0, 2, 3, 1).numpy()
    return np.array([estimate_noise_sigma(a) for a in arrays])


def split_outputs(
    model: torch.nn.Module, split: FolderImages, num_workers: int = 0, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`batch_outputs` of a whole split, streamed from disk."""
    logits, embeddings = stream_outputs(
        model, split, batch_size=batch_size, num_workers=num_workers
    )
    return logits.double().softmax(1).numpy(), embeddings.double().numpy()


def batch_outputs(
    model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """The deployed model's probabilities (float64, so confident scores do not tie) and
    embeddings of ``images``, ``batch_size`` images a pass."""
    logits = predict_logits(model, images, batch_size=batch_size).double()
    embeddings = model_embeddings(model, images, batch_size=batch_size)
    return logits.softmax(1).numpy(), embeddings.double().numpy()


@task(cache_policy=NO_CACHE)
def fit_monitoring(
    trained: TrainedModel,
    calibrated: CalibratedModel,
    evaluation: Evaluation,
    policy: GatePolicy,
    *,
    seed: int = 0,
    selftest_batches: int = 20,
) -> MonitoringFit:
    """The monitoring reference of the new version and its detector self-test.

    The drift reference is the validation split's embeddings: images the model was not
    trained on, so a benign production batch looks like them (training embeddings sit
    tighter and would alarm on unseen images). The self-test resamples the test split,
    which none of the reference has seen.
    """
    model, data = calibrated.model, trained.data
    # Every image is read, corrupted and classified `batch` at a time: at 224x224 the
    # self-test's 1,000 images and their corrupted copies, held at once, took gigabytes.
    batch = data.batch_size
    generator = torch.Generator().manual_seed(seed)
    val, train, test = data.eval_split("val"), data.eval_split("train"), data.eval_split("test")
    val_probs, val_embeddings = split_outputs(model, val, data.num_workers, batch)
    noise_sample = sample_indices(len(train), NOISE_SAMPLE, generator)
    reference = fit_reference(
        val_probs,
        val.targets.numpy(),
        train_embeddings=val_embeddings,
        train_targets=train.targets.numpy(),
        classes=data.classes,
        abstention_threshold=calibrated.abstention_threshold,
        train_noise_sigmas=np.concatenate(
            [noise_sigmas(train.images(chunk)) for chunk in noise_sample.split(batch)]
        ),
        seed=seed,
    )
    if not policy.monitoring:
        return MonitoringFit(reference, None)
    test_probs, test_embeddings = split_outputs(model, test, data.num_workers, batch)
    # The shifted batches: corrupted copies of a bounded sample of the test split (chunk k
    # corrupted with seed + k).
    sample = sample_indices(len(test), SELFTEST_SHIFT_IMAGES, generator)
    targets = test.targets[sample].numpy()
    parts: dict[tuple[str, int], tuple[list, list, list]] = {
        s: ([], [], []) for s in SELFTEST_SHIFTS
    }
    for k, chunk in enumerate(sample.split(batch)):
        images = test.images(chunk)
        for (name, severity), (probs, embeddings, sigmas) in parts.items():
            shifted = corrupt(images, name, severity, seed=seed + k)
            p, e = batch_outputs(model, shifted, batch_size=batch)
            probs.append(p)
            embeddings.append(e)
            missing = NOISE_SAMPLE - sum(len(x) for x in sigmas)
            if missing > 0:
                sigmas.append(noise_sigmas(shifted, missing))
    shifts = []
    for (name, severity), (probs, embeddings, sigmas) in parts.items():
        p = np.concatenate(probs)
        accuracy = float((p.argmax(1) == targets).mean())
        shifts.append(
            ShiftedBatch(
                f"{name} s{severity}",
                p,
                np.concatenate(embeddings),
                accuracy,
                np.concatenate(sigmas),
            )
        )
    selftest = detector_self_test(
        reference,
        test_probs,
        test_embeddings,
        test.targets.numpy(),
        alarm=alarm_rule(policy),
        batch_size=min(500, max(len(test.targets) // 2, 2)),
        n_benign=selftest_batches,
        shifts=shifts,
        confidence=policy.confidence,
        drift_p_min=drift_rule_minimum(policy.monitoring),
        seed=seed,
    )
    return MonitoringFit(reference, selftest)


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Batch:
    """A production batch: its images, where each came from, and its id."""

    images: torch.Tensor  # (m, C, H, W) in [0, 1]
    names: tuple[str, ...]  # path of each image relative to the batch's folder
    files: tuple[Path, ...]
    batch_id: str


def read_batch(folder: Path, *, channels: int, size: Sequence[int]) -> Batch:
    """Every image under ``folder`` (any nesting), decoded and brought to the model's
    input, ``channels`` and ``(height, width)``, by the rule training and serving use
    (:func:`tai.data.model_input.fit_images`).

    Raises:
        MonitoringError: no such folder, no images in it, an undecodable image, or fewer
            than 2 images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MonitoringError(f"{folder} is not a folder; pass the folder of a production batch")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        others = sum(1 for p in folder.rglob("*") if p.is_file())
        what = f"{others} files, none of them an image" if others else "nothing"
        raise MonitoringError(
            f"{folder} holds {what}; put the batch's images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
            "in it"
        )
    if len(files) < 2:
        raise MonitoringError(
            f"{folder} holds a single image; a batch needs at least 2 to estimate anything "
            "(a few hundred give useful intervals)"
        )
    images, digest = [], hashlib.sha256()
    for path in files:
        name = path.relative_to(folder).as_posix()
        try:
            array = load_image(path)
        except (DatasetError, ValueError, OSError) as exc:
            raise MonitoringError(f"{name} in {folder}: {exc}") from None
        image = torch.from_numpy(array)
        image = image[None] if image.ndim == 2 else image.permute(2, 0, 1)
        images.append(fit_images(image.contiguous(), in_channels=channels, image_size=size))
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return Batch(
        torch.stack(images).float().contiguous(),
        tuple(p.relative_to(folder).as_posix() for p in files),
        tuple(files),
        digest.hexdigest()[:12],
    )


def review_selection(
    probs: np.ndarray, abstention_threshold: float | None, budget: int
) -> list[tuple[int, str]]:
    """The images a person should label: every deferred one (confidence below the
    abstention threshold), then the least confident, at most ``budget``; each with why."""
    confidence = probs.max(1)
    order = np.argsort(confidence, kind="stable")
    picked = []
    for i in order[:budget]:
        deferred = abstention_threshold is not None and confidence[i] < abstention_threshold
        picked.append((int(i), "deferred to a person" if deferred else "least confident"))
    return picked


def write_review_folder(
    out: Path,
    batch: Batch,
    probs: np.ndarray,
    classes: Sequence[str],
    picked: list[tuple[int, str]],
) -> Path:
    """``out/review/<batch id>/``: the picked images and ``to_label.csv`` (path, the model's
    suggested label and confidence, why the image is there, and an empty ``label`` column
    for the person)."""
    import csv
    import shutil

    root = out / "review" / batch.batch_id
    (root / "images").mkdir(parents=True, exist_ok=True)
    with (root / "to_label.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "suggested_label", "confidence", "reason", "label"])
        for i, why in picked:
            name = batch.names[i].replace("/", "__")
            shutil.copyfile(batch.files[i], root / "images" / name)
            k = int(probs[i].argmax())
            writer.writerow([f"images/{name}", classes[k], f"{probs[i, k]:.4f}", why, ""])
    return root


def atomic_json(path: Path, obj: object) -> None:
    """Write JSON next to ``path`` and rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(obj, handle, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_reference(store: MlflowStore, run_id: str, version: str) -> MonitoringReference:
    """The monitoring reference a version was registered with.

    Raises:
        MonitoringError: the version has none (registered before monitoring existed).
    """
    from infra.mlflow_store import RegistryError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = store.download_artifacts(run_id, "monitoring", Path(tmp))
        except RegistryError:
            raise MonitoringError(
                f"model version {version} has no monitoring reference (it was registered "
                "before monitoring existed); retrain it with `tai run --force` to monitor it"
            ) from None
        return MonitoringReference.load(folder / Path(REFERENCE_ARTIFACT).name)
