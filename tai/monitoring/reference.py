"""What the monitoring of a model version compares every production batch with.

:func:`fit_reference` runs once, when a version is registered, on its labelled
validation split and a sample of its training embeddings; :func:`tai.monitoring.assess.
assess_batch` then needs no labels and no training data. :meth:`MonitoringReference.save`
writes it to one ``.npz`` file (arrays, and the scalars as a JSON string under
``meta``, read back with ``allow_pickle=False``), about 0.5 MB for 1,000 embeddings of
128 dimensions: small enough to log beside the model.

Why 1,000 training embeddings (``max_reference``): the MMD test's power is limited by the
smaller side, a batch of a few hundred images, long before 1,000 reference points; the
test costs ``O(n_permutations * (n + m)^2)``; and the file stays small. The factors
(principal components) are fitted on every training embedding passed, not on the sample.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from tai.inputs import string_labels
from tai.monitoring.arrays import (
    as_embeddings,
    as_probs,
    as_sigmas,
    as_targets,
    check_count,
    check_seed,
)
from tai.monitoring.atc import (
    SCORE_KINDS,
    atc_scores,
    bootstrap_thresholds,
    class_thresholds,
    fit_threshold,
)
from tai.monitoring.drift import Factors, fit_factors
from tai.monitoring.priors import confusion_joint

__all__ = ["FORMAT", "MonitoringReference", "fit_reference"]

FORMAT = "tai-monitoring-reference"
VERSION = 1
DEFAULT_N_BOOT = 200
DEFAULT_MAX_REFERENCE = 1000
DEFAULT_N_FACTORS = 8
# Validation images a class must be predicted for to get its own ATC threshold.
DEFAULT_MIN_CLASS_SUPPORT = 30

_ARRAYS = (
    "bootstrap_thresholds",
    "class_thresholds",
    "val_class_support",
    "val_class_precision",
    "val_confusion",
    "train_priors",
    "embeddings",
    "factor_mean",
    "factor_components",
    "factor_explained_variance_ratio",
    "factor_scores",
    "noise_sigmas",
)


@dataclass(frozen=True, eq=False)
class MonitoringReference:
    """The reference of one model version (see the module docstring). Arrays are numpy,
    read-only.

    Attributes:
        classes: class names, index-aligned with the model's outputs (``K`` of them).
        score_kind: ATC's score, ``"negative_entropy"`` or ``"max_confidence"``.
        threshold: ATC's threshold, fitted on the validation split.
        bootstrap_thresholds: ``(n_boot,)`` thresholds refitted on bootstrap resamples of
            the validation split (the threshold's uncertainty, for the interval).
        class_thresholds: ``(K,)`` per predicted class, the threshold fitted on the
            validation images predicted as the class; the global one for a class
            predicted fewer than ``min_class_support`` times.
        val_accuracy: validation accuracy (DoC's anchor).
        val_confidence: validation mean top probability (DoC's anchor).
        val_class_support: ``(K,)`` validation images predicted as each class.
        val_class_precision: ``(K,)`` share of those that are right (NaN for none).
        val_confusion: ``(K, K)`` joint shares ``P(pred = j, target = k)`` (BBSE).
        n_val: validation images.
        train_priors: ``(K,)`` class shares of the training split (EM's starting point
            and the baseline of the prior shift).
        abstention_threshold: the model's abstention threshold (defer when the top
            probability is below it); NaN when the model has none.
        expected_deferral_rate: share of validation images below it (NaN without one).
        embeddings: ``(n, D)`` float32 sample of at most ``max_reference`` training
            embeddings (the MMD test's reference).
        factor_mean: ``(D,)`` mean of the training embeddings (the factors' centre).
        factor_components: ``(F, D)`` top principal components of the training
            embeddings (the factors).
        factor_explained_variance_ratio: ``(F,)`` their shares of the variance.
        factor_scores: ``(n, F)`` factor scores of ``embeddings``.
        noise_sigmas: ``(s,)`` noise levels of a sample of training images, or None.
        min_class_support: see ``class_thresholds``.
        seed: the seed it was fitted with.
    """

    classes: tuple[str, ...]
    score_kind: str
    threshold: float
    bootstrap_thresholds: np.ndarray
    class_thresholds: np.ndarray
    val_accuracy: float
    val_confidence: float
    val_class_support: np.ndarray
    val_class_precision: np.ndarray
    val_confusion: np.ndarray
    n_val: int
    train_priors: np.ndarray
    abstention_threshold: float
    expected_deferral_rate: float
    embeddings: np.ndarray
    factor_mean: np.ndarray
    factor_components: np.ndarray
    factor_explained_variance_ratio: np.ndarray
    factor_scores: np.ndarray
    noise_sigmas: np.ndarray | None
    min_class_support: int
    seed: int

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            value = getattr(self, name)
            if value is not None:
                value = np.array(value)  # a copy: the caller's array stays writable
                value.setflags(write=False)
                object.__setattr__(self, name, value)

    @property
    def n_classes(self) -> int:
        """``K``."""
        return len(self.classes)

    @property
    def dim(self) -> int:
        """``D``, the embeddings' dimension."""
        return self.embeddings.shape[1]

    @property
    def factors(self) -> Factors:
        """The factors as :class:`tai.monitoring.drift.Factors`."""
        return Factors(
            self.factor_mean, self.factor_components, self.factor_explained_variance_ratio
        )

    @property
    def has_abstention(self) -> bool:
        """The model has an abstention threshold."""
        return not math.isnan(self.abstention_threshold)

    # ----------------------------------------------------------------------- file

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (one ``.npz``; numpy appends ``.npz`` when it lacks it).

        Returns:
            the path written.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {
            "format": FORMAT,
            "version": VERSION,
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name not in _ARRAYS},
        }
        meta["classes"] = list(self.classes)
        arrays = {n: getattr(self, n) for n in _ARRAYS if getattr(self, n) is not None}
        np.savez_compressed(path, meta=np.array(json.dumps(meta, allow_nan=True)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> MonitoringReference:
        """Read a reference written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not a monitoring reference (not an ``.npz``, no or a
                foreign ``meta``, a newer format version, missing arrays).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no monitoring reference at {path}")
        hint = "write it with MonitoringReference.save, or refit it with fit_reference"
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with data:
                stored = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path} is not a monitoring reference ({err}); {hint}") from err
        try:
            meta = json.loads(str(stored.pop("meta")))
        except (KeyError, json.JSONDecodeError) as err:
            raise ValueError(
                f"{path} has no readable `meta` entry: not a monitoring reference; {hint}"
            ) from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a monitoring reference (format "
                f"{meta.get('format') if isinstance(meta, dict) else meta!r}); "
                f"{hint}"
            )
        if meta.get("version") != VERSION:
            raise ValueError(
                f"{path} is a monitoring reference of format version {meta.get('version')!r}; "
                f"this code reads version {VERSION}: refit it with fit_reference"
            )
        missing = [n for n in _ARRAYS if n != "noise_sigmas" and n not in stored]
        scalars = [f.name for f in fields(cls) if f.name not in _ARRAYS]
        missing += [n for n in scalars if n not in meta]
        if missing:
            raise ValueError(f"{path} lacks {missing}: a damaged monitoring reference; {hint}")
        values: dict[str, Any] = {n: meta[n] for n in scalars}
        values["classes"] = tuple(meta["classes"])
        values.update({n: stored.get(n) for n in _ARRAYS})
        return cls(**values)


def fit_reference(
    val_probs: Any,
    val_targets: Any,
    *,
    train_embeddings: Any,
    train_targets: Any,
    classes: Sequence[str],
    abstention_threshold: float | None,
    score_kind: str = "negative_entropy",
    train_noise_sigmas: Any = None,
    n_factors: int = DEFAULT_N_FACTORS,
    n_boot: int = DEFAULT_N_BOOT,
    max_reference: int = DEFAULT_MAX_REFERENCE,
    min_class_support: int = DEFAULT_MIN_CLASS_SUPPORT,
    seed: int = 0,
) -> MonitoringReference:
    """Fit the reference of a model version.

    Args:
        val_probs: ``(N, K)`` the model's temperature-scaled probabilities on the
            validation split (the split the temperature and the abstention threshold
            were fitted on is fine: ATC's threshold is fitted on it too, as in the paper).
        val_targets: ``(N,)`` its class indices, ``N >= 2``.
        train_embeddings: ``(M, D)`` penultimate-layer embeddings of training images,
            ``M >= 2``; every row fits the factors, a seeded sample of at most
            ``max_reference`` rows is stored for the MMD test. Embeddings of images the
            model was not trained on (e.g. the validation split) are the better
            reference when the model fits its training set much more tightly than
            unseen images: :func:`tai.monitoring.selftest.detector_self_test` shows it as
            false alarms on benign batches.
        train_targets: ``(M',)`` class indices of the training split, for its priors
            (need not be aligned with ``train_embeddings``).
        classes: the ``K`` class names, index-aligned with the model's outputs.
        abstention_threshold: the model's abstention threshold, or None.
        score_kind: ATC's score, one of ``"negative_entropy"`` (default, the paper's
            ATC-NE) and ``"max_confidence"``.
        train_noise_sigmas: noise levels of a sample of training images
            (:func:`tai.data.profile.estimate_noise_sigma`), or None.
        n_factors: principal components kept as factors.
        n_boot: bootstrap resamples of the validation split for the threshold.
        max_reference: most training embeddings stored.
        min_class_support: validation images a class must be predicted for to get its
            own threshold.
        seed: seeds the bootstrap and the sample.

    Raises:
        ValueError: on an invalid argument or input (the message names it).
    """
    names = string_labels(classes, "class names")
    k = len(names)
    if k < 2:
        raise ValueError(f"Expected at least 2 class names, but got {names!r}.")
    probs = as_probs(val_probs, n_classes=k, name="val_probs")
    if len(probs) < 2:
        raise ValueError(
            f"Expected at least 2 validation images in `val_probs`, but got {len(probs)}."
        )
    targets = as_targets(val_targets, n_classes=k, n_rows=len(probs), name="val_targets")
    embeddings = as_embeddings(train_embeddings, name="train_embeddings")
    if len(embeddings) < 2:
        raise ValueError(
            f"Expected at least 2 rows in `train_embeddings`, but got {len(embeddings)}."
        )
    train_t = as_targets(train_targets, n_classes=k, name="train_targets")
    if len(train_t) == 0:
        raise ValueError("Expected at least one training target in `train_targets`, got none.")
    if score_kind not in SCORE_KINDS:
        raise ValueError(
            f"Expected `score_kind` in {SCORE_KINDS}, but got {score_kind!r}. Use "
            "'negative_entropy' (the paper's ATC-NE) unless you have a reason."
        )
    sigmas = None
    if train_noise_sigmas is not None:
        sigmas = as_sigmas(train_noise_sigmas, "train_noise_sigmas")
    n_factors = check_count(n_factors, "n_factors", 1)
    n_boot = check_count(n_boot, "n_boot", 1)
    max_reference = check_count(max_reference, "max_reference", 2)
    min_class_support = check_count(min_class_support, "min_class_support", 1)
    seed = check_seed(seed)
    theta = _abstention(abstention_threshold)

    rng = np.random.default_rng(seed)
    scores = atc_scores(probs, score_kind)
    preds = probs.argmax(axis=1)
    correct = preds == targets
    threshold = fit_threshold(scores, correct)
    per_class, support, precision = class_thresholds(
        scores, preds, correct, k, global_threshold=threshold, min_support=min_class_support
    )
    confidence = probs.max(axis=1)
    factors = fit_factors(embeddings, n_factors)
    sample = embeddings
    if len(embeddings) > max_reference:
        sample = embeddings[np.sort(rng.choice(len(embeddings), max_reference, replace=False))]
    return MonitoringReference(
        classes=tuple(names),
        score_kind=score_kind,
        threshold=threshold,
        bootstrap_thresholds=bootstrap_thresholds(scores, correct, n_boot, rng),
        class_thresholds=per_class,
        val_accuracy=float(correct.mean()),
        val_confidence=float(confidence.mean()),
        val_class_support=support.astype(np.int64),
        val_class_precision=precision,
        val_confusion=confusion_joint(preds, targets, k),
        n_val=len(probs),
        train_priors=np.bincount(train_t, minlength=k) / len(train_t),
        abstention_threshold=theta,
        expected_deferral_rate=float(np.mean(confidence < theta))
        if not math.isnan(theta)
        else math.nan,
        embeddings=sample.astype(np.float32),
        factor_mean=factors.mean,
        factor_components=factors.components,
        factor_explained_variance_ratio=factors.explained_variance_ratio,
        factor_scores=factors.transform(sample).astype(np.float32),
        noise_sigmas=sigmas,
        min_class_support=min_class_support,
        seed=seed,
    )


def _abstention(value: Any) -> float:
    if value is None:
        return math.nan
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating))
        or not (0 <= float(value) <= 1)
    ):
        raise ValueError(
            f"Expected `abstention_threshold` to be a probability in [0, 1] or None, but got "
            f"{value!r}. Pass the threshold fitted by tai.principles.autonomy.selective."
        )
    return float(value)
