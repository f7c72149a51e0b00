"""The registered model: an MLflow pyfunc that classifies, calibrates and defers to a human.

``mlflow models serve -m models:/<name>@champion`` serves it as is. For each image of a
batch ``(N, C, H, W)`` of floats in ``[0, 1]`` (any ``H, W``; ``C`` = 1 or 3), or of a list
of ``(C, H, W)`` arrays of different sizes (from Python; over HTTP a request is one array),
it answers the predicted class label, its confidence after temperature scaling (Guo et al.
2017, see :mod:`tai.modeling.temperature`), the calibrated class probabilities, and a
decision: ``"predict"``, or ``"defer_to_human"`` when the confidence is below the abstention
threshold chosen on validation (selective prediction, Geifman & El-Yaniv 2017). A threshold
of ``None`` never defers.

Each image is fitted to the model's input as the evaluation fitted it
(:func:`tai.data.model_input.fit_images`): converted to the model's mode (RGB to
grayscale, grayscale to RGB), scaled to cover the model's ``image_size`` (bilinear,
antialiased) and centre-cropped to it.

Security: the model is logged as *models from code* (a three-line entry script, see
:data:`MODEL_CODE`), so loading unpickles nothing; the module is rebuilt from its config
(:func:`tai.modeling.models.model_from_config`; a user's model by the factory path recorded
there, imported from the model's own code) and its state dict, loaded with
``torch.load(weights_only=True)`` after the file's sha256 has been checked against the
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
# Also copied when the weights config has them (tai.modeling.models.model_config).
_OPTIONAL_KEYS = (
    "factory",
    "factory_distribution",
    "image_size",
    "model_api",
    "pretrained",
    "pretrained_sha256",
)
_CHUNK = 64  # images per forward pass


class InvalidImagesError(ValueError):
    """A prediction input is not a batch of images this model accepts."""


def serving_config(
    weights_config: Mapping[str, Any],
    *,
    weights_sha256: str,
    classes: Sequence[str],
    image_shape: Sequence[int] | None = None,
    defer_threshold: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> dict[str, Any]:
    """The config the pyfunc loads with: how to rebuild the module and how to answer.

    Args:
        weights_config: what rebuilds the module (``model``, ``in_channels``,
            ``num_classes``, ``temperature``, and from
            :func:`tai.modeling.models.model_config` ``image_size``, ``factory``,
            ``model_api``, ...), as logged with the weights.
        weights_sha256: the digest of ``state_dict.pt``, checked before it is loaded.
        classes: the class labels, index ``k`` for output ``k``.
        image_shape: ``(C, H, W)`` of the model's input. Optional when ``weights_config``
            has ``image_size`` (then it must agree); requests of any size are fitted to it.
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
    in_channels = int(weights_config["in_channels"])
    image_size = weights_config.get("image_size")
    if image_shape is None and image_size is None:
        raise ValueError(
            "Expected `image_size` in `weights_config` or an `image_shape` (C, H, W): the "
            "size the model takes."
        )
    shape = (
        tuple(int(s) for s in image_shape)
        if image_shape is not None
        else (in_channels, *(int(s) for s in image_size))
    )
    if len(shape) != 3 or shape[0] != in_channels or min(shape) < 1:
        raise ValueError(
            f"Expected `image_shape` (C, H, W) with C = {in_channels} (the model's input "
            f"channels), but got {tuple(image_shape)}. Pass input_example.shape[1:]."
        )
    if image_size is not None and list(shape[1:]) != [int(s) for s in image_size]:
        raise ValueError(
            f"`image_shape` {shape} differs from the model's image_size {list(image_size)}; "
            "pass an input example of the size the model was built for (or no image_shape)."
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
        **{k: weights_config[k] for k in _OPTIONAL_KEYS if k in weights_config},
        "image_size": list(shape[1:]),
        "classes": classes,
        "image_shape": list(shape),
        "defer_threshold": None if defer_threshold is None else float(defer_threshold),
        "max_pixels": max_pixels,
        "max_batch": max_batch,
        "weights_sha256": weights_sha256,
    }


def model_signature(image_shape: Sequence[int] | None = None):
    """The pyfunc's signature: one row per image out; no input schema.

    The input is a float batch ``(N, C, H, W)`` of any size or a list of ``(C, H, W)``
    arrays, which no MLflow input schema describes (a tensor schema refuses lists), so
    :func:`validate_images` checks it instead. ``image_shape`` is accepted for
    compatibility and ignored.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array

    outputs = Schema(
        [
            ColSpec("string", "label"),
            ColSpec("long", "class_index"),
            ColSpec("double", "confidence"),
            ColSpec(Array("double"), "probabilities"),
            ColSpec("string", "decision"),
        ]
    )
    return ModelSignature(inputs=None, outputs=outputs)


def _check_size(shape: tuple[int, ...], *, what: str, max_pixels: int, fit: str) -> None:
    h, w = shape[-2:]
    if h * w > max_pixels:
        raise InvalidImagesError(
            f"Expected images of at most {max_pixels} pixels, but got {what}{h}x{w} = "
            f"{h * w}. {fit}"
        )


def _check_values(images: np.ndarray, *, what: str) -> np.ndarray:
    """dtype, finiteness and range of one image or a batch; the images as float32."""
    where = f" in {what.strip()}" if what else ""
    if not np.issubdtype(images.dtype, np.floating):
        raise InvalidImagesError(
            f"Expected floating point pixel values in [0, 1], but got dtype {images.dtype}"
            f"{where}. Divide 8-bit images by 255."
        )
    if not np.isfinite(images).all():
        raise InvalidImagesError(f"Expected finite pixel values, but found NaN or infinity{where}.")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise InvalidImagesError(
            f"Expected pixel values in [0, 1], but got values in [{low:g}, {high:g}]{where}. "
            "Scale the images to [0, 1] (e.g. divide 8-bit images by 255)."
        )
    return images.astype(np.float32, copy=False)


def validate_images(
    images: Any,
    *,
    image_shape: Sequence[int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> np.ndarray | list[np.ndarray]:
    """Check a prediction input; return it as float32.

    Args:
        images: an array (or torch tensor) ``(N, C, H, W)``, or a list of ``(C, H, W)``
            arrays (or tensors) of different sizes; ``C`` = 1 (grayscale) or 3 (RGB),
            values in ``[0, 1]``.
        image_shape: ``(C, H, W)`` every image must have exactly (the input example); by
            default any size and 1 or 3 channels.
        max_pixels: most ``H * W`` of one image.
        max_batch: most images.

    Returns:
        A float32 array ``(N, C, H, W)``, or a list of float32 ``(C, H, W)`` arrays for a list.

    Raises:
        InvalidImagesError: not an array or a list of arrays, wrong rank or channels (or
            shape, given ``image_shape``), more than ``max_pixels`` pixels or ``max_batch``
            images, not floating point, NaN or infinite values, or values outside ``[0, 1]``.
    """
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    exact = None if image_shape is None else tuple(int(s) for s in image_shape)
    channels = "C = 1 or 3" if exact is None else f"C = {exact[0]}"
    fit = "Resize them." if exact is None else f"Resize to {exact[1]}x{exact[2]}."
    if isinstance(images, (list, tuple)):
        if not 1 <= len(images) <= max_batch:
            raise InvalidImagesError(
                f"Expected 1 to {max_batch} images per request, but got {len(images)}. "
                "Split the batch."
            )
        checked = []
        for index, image in enumerate(images):
            if hasattr(image, "detach"):
                image = image.detach().cpu().numpy()
            what = f"image {index} "
            if not isinstance(image, np.ndarray) or image.ndim != 3:
                raise InvalidImagesError(
                    f"Expected each image of a list to be an array (C, H, W) with {channels}, "
                    f"but {what}is "
                    + (
                        f"of shape {image.shape}"
                        if isinstance(image, np.ndarray)
                        else f"a {type(image).__name__}"
                    )
                    + ". Send arrays with the channel dimension first."
                )
            _check_size(image.shape, what=what, max_pixels=max_pixels, fit=fit)
            _check_channels(image.shape[0], image.shape, exact, what=what)
            checked.append(_check_values(image, what=what))
        return checked
    if not isinstance(images, np.ndarray):
        raise InvalidImagesError(
            f"Expected a float array of images (N, C, H, W) or a list of (C, H, W) arrays, "
            f"but got {type(images).__name__}. "
            'Send {"inputs": [...]} with pixel values in [0, 1].'
        )
    if images.ndim != 4:
        shape = (
            "(N, C, H, W) with C = 1 or 3"
            if exact is None
            else f"(N, C, H, W) = (N, {', '.join(map(str, exact))})"
        )
        raise InvalidImagesError(
            f"Expected images of shape {shape}, but got {images.ndim} dimensions "
            f"{images.shape}. Add the batch and channel dimensions."
        )
    n = images.shape[0]
    if n < 1 or n > max_batch:
        raise InvalidImagesError(
            f"Expected 1 to {max_batch} images per request, but got {n}. Split the batch."
        )
    _check_size(images.shape, what="", max_pixels=max_pixels, fit=fit)
    _check_channels(images.shape[1], images.shape, exact, what="")
    return _check_values(images, what="")


def _check_channels(
    channels: int, shape: tuple[int, ...], exact: tuple[int, ...] | None, *, what: str
) -> None:
    if exact is not None:
        if tuple(shape[-3:]) != exact:
            raise InvalidImagesError(
                f"Expected images of shape (N, {', '.join(map(str, exact))}) (channels, "
                f"height, width of the training images), but got {what}{shape}. Resize or "
                "convert the images."
            )
    elif channels not in (1, 3):
        raise InvalidImagesError(
            f"Expected 1 (grayscale) or 3 (RGB) channels first, but got {what}of shape {shape}. "
            "Drop an alpha channel; put channels before height and width."
        )


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

        from tai.modeling.memory_format import to_channels_last
        from tai.modeling.models import model_from_config
        from tai.modeling.temperature import TemperatureScaledModel

        config = json.loads(Path(context.artifacts["config"]).read_text())
        # "" (the logged default) means "nothing to check beyond the config's digest".
        expected = (context.model_config or {}).get("expected_weights_sha256") or None
        state = load_verified_state_dict(
            Path(context.artifacts["weights"]),
            [config["weights_sha256"], expected],
            source=f"the weights of the served model ({context.artifacts['weights']})",
        )
        module = model_from_config(config)
        scaled = TemperatureScaledModel(module, config["temperature"])
        scaled.load_state_dict(state)
        if not math.isclose(float(scaled.temperature), config["temperature"], rel_tol=1e-6):
            raise ValueError(
                f"the weights' temperature {float(scaled.temperature)} differs from the "
                f"config's {config['temperature']}; re-register the model."
            )
        # Channels-last convolutions when served on the CPU (tai.modeling.memory_format).
        to_channels_last(scaled)
        self.model = scaled.eval()
        self.config = config
        self._torch = torch

    def fit_images(self, images: np.ndarray | list[np.ndarray]):
        """Checked images as the model's input: a float tensor ``(N, C, H, W)`` of its
        channels and size (:func:`tai.data.model_input.fit_images`)."""
        from tai.data.model_input import fit_images

        torch = self._torch
        c, h, w = self.config["image_shape"]
        if isinstance(images, np.ndarray):
            batch = torch.from_numpy(np.ascontiguousarray(images))
            return fit_images(batch, in_channels=c, image_size=(h, w))
        return torch.stack(
            [
                fit_images(
                    torch.from_numpy(np.ascontiguousarray(image)), in_channels=c, image_size=(h, w)
                )
                for image in images
            ]
        )

    # np.ndarray is a type hint MLflow 3 derives no schema from, and it does not convert a
    # list: the model has no input schema (see model_signature), validate_images checks.
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Classify images in ``[0, 1]`` of any size; see :func:`decide` for the answer."""
        from mlflow.exceptions import MlflowException

        config = self.config
        try:
            images = validate_images(
                model_input, max_pixels=config["max_pixels"], max_batch=config["max_batch"]
            )
        except InvalidImagesError as err:
            # An MLflow "invalid parameter" error: the scoring server answers 400, not 500.
            raise MlflowException.invalid_parameter_value(str(err)) from err
        torch = self._torch
        with torch.inference_mode():
            batch = self.fit_images(images)
            probs = torch.cat(
                [
                    self.model(batch[i : i + _CHUNK]).softmax(dim=1)
                    for i in range(0, len(batch), _CHUNK)
                ]
            )
        return decide(probs.double().numpy(), config["classes"], config["defer_threshold"])
