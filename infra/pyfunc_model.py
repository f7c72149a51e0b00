"""The registered model: an MLflow pyfunc that classifies, calibrates and defers to a human.

``mlflow models serve -m models:/<name>@champion`` serves it as is. For each image of a
batch ``(N, C, H, W)`` of floats in ``[0, 1]`` it answers the predicted class label, its
confidence after temperature scaling (Guo et al. 2017, see :mod:`tai.modeling.temperature`), the
calibrated class probabilities, and a decision: ``"predict"``, or ``"defer_to_human"`` when
the confidence is below the abstention threshold chosen on validation (selective prediction,
Geifman & El-Yaniv 2017). A threshold of ``None`` never defers.

Security: the model is logged as *models from code* (a three-line entry script, see
:data:`MODEL_CODE`), so loading unpickles nothing; the module is rebuilt from its state dict
with ``torch.load(weights_only=True)`` after the file's sha256 has been checked against the
digest in the model's config and, when the project loads it, against the registry's
(:meth:`infra.mlflow_store.MlflowStore.load_pyfunc`). Inputs are checked before the model
sees them: rank, channels, dtype, finite values in ``[0, 1]``, image size and batch size.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from infra.integrity import load_verified_state_dict

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_PIXELS",
    "DECISIONS",
    "MODEL_CODE",
    "InvalidImagesError",
    "TaiClassifier",
    "decide",
    "model_signature",
    "serving_config",
    "validate_images",
]

DEFAULT_MAX_PIXELS = 1024 * 1024
"""Most pixels (``H * W``) of one input image."""
DEFAULT_MAX_BATCH = 1024
"""Most images in one request."""
DECISIONS = ("predict", "defer_to_human")

# The models-from-code entry point MLflow executes at load time, instead of unpickling.
MODEL_CODE = '''"""Entry point of the TAI classifier pyfunc (MLflow models from code)."""

import mlflow

from infra.pyfunc_model import TaiClassifier

mlflow.models.set_model(TaiClassifier())
'''

_CONFIG_KEYS = ("model", "in_channels", "num_classes", "temperature")


class InvalidImagesError(ValueError):
    """A prediction input is not a batch of images this model accepts."""


def serving_config(
    weights_config: Mapping[str, Any],
    *,
    weights_sha256: str,
    classes: Sequence[str],
    image_shape: Sequence[int],
    defer_threshold: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> dict[str, Any]:
    """The config the pyfunc loads with: how to rebuild the module and how to answer.

    Args:
        weights_config: what rebuilds the module (``model``, ``in_channels``,
            ``num_classes``, ``temperature``), as logged with the weights.
        weights_sha256: the digest of ``state_dict.pt``, checked before it is loaded.
        classes: the class labels, index ``k`` for output ``k``.
        image_shape: ``(C, H, W)`` of the training images; requests must match it.
        defer_threshold: answer ``"defer_to_human"`` below this confidence, in ``[0, 1]``;
            ``None`` never defers.
        max_pixels: most ``H * W`` of an input image.
        max_batch: most images in one request.

    Raises:
        ValueError: a value is missing or out of range; the message names it.
    """
    missing = [k for k in _CONFIG_KEYS if k not in weights_config]
    if missing:
        raise ValueError(
            f"Expected `weights_config` to hold {', '.join(_CONFIG_KEYS)}, but it lacks "
            f"{', '.join(missing)}. Pass the config logged with the weights."
        )
    classes = [str(c) for c in classes]
    num_classes = int(weights_config["num_classes"])
    if len(classes) != num_classes or len(set(classes)) != len(classes):
        raise ValueError(
            f"Expected {num_classes} distinct class labels (the model's outputs), but got "
            f"{classes!r}. Pass the dataset's classes in index order."
        )
    if defer_threshold is not None and (
        isinstance(defer_threshold, bool)
        or not isinstance(defer_threshold, numbers.Real)
        or not 0.0 <= defer_threshold <= 1.0
    ):
        raise ValueError(
            f"Expected `defer_threshold` to be a confidence in [0, 1] or None, but got "
            f"{defer_threshold!r}. Pass the abstention threshold chosen on validation."
        )
    shape = tuple(int(s) for s in image_shape)
    in_channels = int(weights_config["in_channels"])
    if len(shape) != 3 or shape[0] != in_channels or min(shape) < 1:
        raise ValueError(
            f"Expected `image_shape` (C, H, W) with C = {in_channels} (the model's input "
            f"channels), but got {tuple(image_shape)}. Pass input_example.shape[1:]."
        )
    for name, value in (("max_pixels", max_pixels), ("max_batch", max_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected `{name}` to be an integer >= 1, but got {value!r}.")
    if shape[1] * shape[2] > max_pixels:
        raise ValueError(
            f"The model's images have {shape[1]}x{shape[2]} = {shape[1] * shape[2]} pixels, "
            f"more than max_pixels = {max_pixels}; raise max_pixels."
        )
    return {
        **{k: weights_config[k] for k in _CONFIG_KEYS},
        "classes": classes,
        "image_shape": list(shape),
        "defer_threshold": None if defer_threshold is None else float(defer_threshold),
        "max_pixels": max_pixels,
        "max_batch": max_batch,
        "weights_sha256": weights_sha256,
    }


def model_signature(image_shape: Sequence[int]):
    """The pyfunc's signature: float32 ``(-1, C, H, W)`` in, one row per image out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec
    from mlflow.types.schema import Array

    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *(int(s) for s in image_shape)))])
    outputs = Schema(
        [
            ColSpec("string", "label"),
            ColSpec("long", "class_index"),
            ColSpec("double", "confidence"),
            ColSpec(Array("double"), "probabilities"),
            ColSpec("string", "decision"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def validate_images(
    images: Any,
    *,
    image_shape: Sequence[int],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> np.ndarray:
    """Check a prediction input; return it as a float32 array ``(N, C, H, W)``.

    Raises:
        InvalidImagesError: not an array, wrong rank, channels or size, more than
            ``max_pixels`` pixels or ``max_batch`` images, not floating point, NaN or
            infinite values, or values outside ``[0, 1]``.
    """
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise InvalidImagesError(
            f"Expected a float array of images (N, C, H, W), but got {type(images).__name__}. "
            'Send {"inputs": [...]} with pixel values in [0, 1].'
        )
    c, h, w = (int(s) for s in image_shape)
    if images.ndim != 4:
        raise InvalidImagesError(
            f"Expected images of shape (N, C, H, W) = (N, {c}, {h}, {w}), but got "
            f"{images.ndim} dimensions {images.shape}. Add the batch and channel dimensions."
        )
    n = images.shape[0]
    if n < 1 or n > max_batch:
        raise InvalidImagesError(
            f"Expected 1 to {max_batch} images per request, but got {n}. Split the batch."
        )
    if images.shape[2] * images.shape[3] > max_pixels:
        raise InvalidImagesError(
            f"Expected images of at most {max_pixels} pixels, but got "
            f"{images.shape[2]}x{images.shape[3]} = {images.shape[2] * images.shape[3]}. "
            f"Resize to {h}x{w}."
        )
    if images.shape[1:] != (c, h, w):
        raise InvalidImagesError(
            f"Expected images of shape (N, {c}, {h}, {w}) (channels, height, width of the "
            f"training images), but got {images.shape}. Resize or convert the images."
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise InvalidImagesError(
            f"Expected floating point pixel values in [0, 1], but got dtype {images.dtype}. "
            "Divide 8-bit images by 255."
        )
    if not np.isfinite(images).all():
        raise InvalidImagesError("Expected finite pixel values, but found NaN or infinity.")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise InvalidImagesError(
            f"Expected pixel values in [0, 1], but got values in [{low:g}, {high:g}]. "
            "Scale the images to [0, 1] (e.g. divide 8-bit images by 255)."
        )
    return images.astype(np.float32, copy=False)


def decide(
    probs: np.ndarray, classes: Sequence[str], defer_threshold: float | None
) -> pd.DataFrame:
    """One answer row per image: label, class index, confidence, probabilities, decision.

    Args:
        probs: ``(N, K)`` calibrated class probabilities.
        classes: the ``K`` class labels.
        defer_threshold: defer when the confidence is strictly below it; ``None`` never.

    Returns:
        A ``pandas.DataFrame`` with columns ``label``, ``class_index``, ``confidence``,
        ``probabilities`` (a list per row) and ``decision`` (one of :data:`DECISIONS`).
    """
    probs = np.asarray(probs, dtype=np.float64)
    index = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), index]
    defer = (
        np.zeros(len(probs), dtype=bool)
        if defer_threshold is None
        else confidence < defer_threshold
    )
    return pd.DataFrame(
        {
            "label": [str(classes[k]) for k in index],
            "class_index": index.astype(np.int64),
            "confidence": confidence,
            "probabilities": [row.tolist() for row in probs],
            "decision": np.where(defer, DECISIONS[1], DECISIONS[0]),
        }
    )


class TaiClassifier(mlflow.pyfunc.PythonModel):
    """The served classifier: temperature-scaled probabilities and a defer decision.

    Artifacts: ``weights`` (``state_dict.pt`` of a
    :class:`~tai.modeling.temperature.TemperatureScaledModel`) and ``config`` (JSON from
    :func:`serving_config`). ``model_config`` passed to ``mlflow.pyfunc.load_model`` may hold
    ``expected_weights_sha256``: the registry's digest (the version's ``tai.weights_sha256``
    tag), checked as well. A server gets it from the environment::

        MLFLOW_PYFUNC_INFERENCE_CONFIG='{"expected_weights_sha256": "<digest>"}' \
            mlflow models serve -m models:/tai-classifier@champion --env-manager local
    """

    def load_context(self, context) -> None:
        import torch

        from tai.modeling.models import build_model
        from tai.modeling.temperature import TemperatureScaledModel

        config = json.loads(Path(context.artifacts["config"]).read_text())
        # "" (the logged default) means "nothing to check beyond the config's digest".
        expected = (context.model_config or {}).get("expected_weights_sha256") or None
        state = load_verified_state_dict(
            Path(context.artifacts["weights"]),
            [config["weights_sha256"], expected],
            source=f"the weights of the served model ({context.artifacts['weights']})",
        )
        module = build_model(
            config["model"], in_channels=config["in_channels"], num_classes=config["num_classes"]
        )
        scaled = TemperatureScaledModel(module, config["temperature"])
        scaled.load_state_dict(state)
        if not math.isclose(float(scaled.temperature), config["temperature"], rel_tol=1e-6):
            raise ValueError(
                f"the weights' temperature {float(scaled.temperature)} differs from the "
                f"config's {config['temperature']}; re-register the model."
            )
        self.model = scaled.eval()
        self.config = config
        self._torch = torch

    # np.ndarray is a type hint MLflow 3 derives no schema from: the tensor signature logged
    # with the model stays the one that is enforced.
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Classify a batch of images in ``[0, 1]``; see :func:`decide` for the answer."""
        from mlflow.exceptions import MlflowException

        config = self.config
        try:
            images = validate_images(
                model_input,
                image_shape=config["image_shape"],
                max_pixels=config["max_pixels"],
                max_batch=config["max_batch"],
            )
        except InvalidImagesError as err:
            # An MLflow "invalid parameter" error: the scoring server answers 400, not 500.
            raise MlflowException.invalid_parameter_value(str(err)) from err
        torch = self._torch
        with torch.inference_mode():
            probs = self.model(torch.from_numpy(np.ascontiguousarray(images))).softmax(dim=1)
        return decide(probs.double().numpy(), config["classes"], config["defer_threshold"])
