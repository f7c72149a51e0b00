"""Model factory: image classifiers that expose their penultimate layer.

Every model built here maps an image batch in [0, 1] to logits (``forward``) and to its
embedding, the penultimate layer (``embed``); normalisation happens inside the model, so
corruptions and explanations work in pixel space. The TAI checks use ``embed`` for
prototypes and factors of variation, so it is part of the contract, not an afterthought.

``name`` (``TAI_MODEL``) is one of

* the project's own models, :data:`MODEL_NAMES`: ``small_cnn`` (three conv layers, a 128-d
  embedding; any image of at least 4x4) and ``resnet18_small`` (ResNet-18 with the CIFAR
  stem, a 3x3 stride-1 convolution and no max-pool, for small images of at least 8x8;
  trained from scratch). Both normalise with ``(x - 0.5) / 0.5`` and take 1 or 3 channels
  directly;
* any torchvision classification architecture (``resnet18``, ``resnet50``,
  ``efficientnet_b0``, ``mobilenet_v3_small``, ``convnext_tiny``, ``vit_b_16``, ...; see
  :mod:`tai.modeling.torchvision_models`), ImageNet-normalised, grayscale repeated to RGB;
* a user's factory, ``package.module:factory`` or an installed ``tai.models`` entry point
  (see :mod:`tai.modeling.user_models`).

Built models are :class:`Classifier` (``features`` -> embedding, ``head`` -> logits) or, for a
user's module with its own ``embed``, :class:`EmbeddingClassifier`. :func:`model_config` is
what rebuilds one from its state dict (:func:`model_from_config`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tai.data.model_input import image_size_pair
from tai.modeling.classifier import Classifier, EmbeddingClassifier
from tai.modeling.pretrained import (
    PretrainedWeightsError,
    is_state_dict_path,
    load_backbone_state,
    read_state_dict,
    resolve_pretrained,
    torchvision_weights,
)

__all__ = [
    "MODEL_API",
    "MODEL_NAMES",
    "Classifier",
    "EmbeddingClassifier",
    "PretrainedWeightsError",
    "TaiModel",
    "build_model",
    "default_image_size",
    "model_code_paths",
    "model_config",
    "model_from_config",
    "model_kind",
    "model_requirements",
    "resnet18_small",
    "small_cnn",
]

MODEL_NAMES = ("small_cnn", "resnet18_small")
"""The project's own models; torchvision's and your own are accepted too (:func:`model_kind`)."""
MODEL_API = 2
"""Written into :func:`model_config`. A config without it predates torchvision architectures:
its ``resnet18`` is today's ``resnet18_small``."""
_MINIMUM = {"small_cnn": (4, 4), "resnet18_small": (8, 8)}

TaiModel = Classifier | EmbeddingClassifier


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def small_cnn(in_channels: int, num_classes: int, *, width: int = 16) -> Classifier:
    """Three 3x3 conv layers (pooling after the first two) and a 128-d embedding.

    Pooling early keeps it cheap on a CPU (about 1.7 MMAC per 28x28 image at width 16);
    the flattened 7x7 map keeps the spatial layout that digits and other small images need.
    """
    features = nn.Sequential(
        *_conv_bn_relu(in_channels, width),
        nn.MaxPool2d(2),
        *_conv_bn_relu(width, 2 * width),
        nn.MaxPool2d(2),
        *_conv_bn_relu(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(2 * width * 49, 128),
        nn.ReLU(),
        nn.Dropout(0.25),
    )
    return Classifier(features, nn.Linear(128, num_classes), in_channels=in_channels)


def resnet18_small(in_channels: int, num_classes: int) -> Classifier:
    """torchvision's ResNet-18 with its stem adapted to small images (the CIFAR variant).

    The 7x7 stride-2 stem and the max-pool would shrink a 28x28 image to 7x7 before the
    first block, so the stem is a 3x3 stride-1 convolution taking ``in_channels`` directly
    and the max-pool is dropped. This was ``resnet18`` before torchvision architectures
    were accepted by name.
    """
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    head = net.fc
    net.fc = nn.Identity()  # the ResNet now ends at the pooled 512-d embedding
    return Classifier(net, head, in_channels=in_channels)


def model_kind(name: str) -> str:
    """``"project"``, ``"torchvision"``, ``"factory"`` (a ``module:function`` path) or
    ``"entry_point"``: where ``name`` comes from. Imports nothing of the user's.

    Raises:
        ValueError: none of those; the message lists the choices.
    """
    from tai.modeling.torchvision_models import is_torchvision_model
    from tai.modeling.user_models import entry_point_names

    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected a model name, but got {name!r}.")
    if name in MODEL_NAMES:
        return "project"
    if is_torchvision_model(name):
        return "torchvision"
    if ":" in name:
        return "factory"
    if name in entry_point_names():
        return "entry_point"
    raise ValueError(_unknown(name))


def _unknown(name: str) -> str:
    from tai.modeling.user_models import ENTRY_POINT_GROUP, entry_point_names

    entry = entry_point_names()
    return (
        f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}, a torchvision "
        "classification architecture (torchvision.models.list_models(module=torchvision."
        "models): resnet18, resnet50, efficientnet_b0, mobilenet_v3_small, convnext_tiny, "
        "vit_b_16, ...), your own factory as 'package.module:factory'"
        + (
            f", or an installed {ENTRY_POINT_GROUP!r} entry point: {', '.join(entry)}"
            if entry
            else f" or an installed {ENTRY_POINT_GROUP!r} entry point (none is installed)"
        )
    )


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int | Sequence[int] | None = None,
    seed: int = 0,
    pretrained: str | os.PathLike | None = None,
    freeze_backbone: bool = False,
) -> TaiModel:
    """Build a classifier by name, seeded, optionally from pretrained weights.

    Args:
        name: see the module docstring (``TAI_MODEL``).
        in_channels: 1 (grayscale) or 3 (RGB): the channels of the images it takes.
        num_classes: number of classes (>= 2); the head is always new, of this size.
        image_size: ``(H, W)`` (or an int for a square) of the images it takes. The size
            is checked against what the architecture needs; a ViT is built for it. ``None``
            checks nothing (a ViT is built for 224) and is refused for a user's factory.
        seed: seeds the weight initialisation (the global random state is left alone).
        pretrained: ``TAI_PRETRAINED``: torchvision weights (``ResNet18_Weights.IMAGENET1K_V1``,
            ``IMAGENET1K_V1``, ``DEFAULT``), read from the local torch cache only, or the path
            of a state dict file; see :mod:`tai.modeling.pretrained`. Everything but the head
            is loaded. ``None`` or ``""``: none.
        freeze_backbone: train only the head (see :meth:`Classifier.freeze_backbone`).

    Returns:
        The model (train mode), with ``name``, ``factory``, ``in_channels``, ``num_classes``,
        ``image_size``, ``pretrained`` and ``pretrained_sha256`` (the sha256 of the file the
        pretrained weights were read from, else ``None``) set.

    Raises:
        ValueError: an unknown name, bad sizes, an image size the architecture cannot take,
            a user's factory that breaks its contract; :class:`PretrainedWeightsError` (a
            ValueError) for pretrained weights that are missing, corrupt or do not fit.
    """
    from tai.modeling.torchvision_models import (
        SizeRule,
        build_torchvision,
        check_image_size,
        is_torchvision_model,
        size_rule,
    )
    from tai.modeling.user_models import build_user_model, resolve_factory

    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    size = None if image_size is None else image_size_pair(image_size)
    pretrained = None if pretrained in (None, "") else pretrained

    factory = None
    torchvision_arch = name not in MODEL_NAMES and is_torchvision_model(name)
    if name not in MODEL_NAMES and not torchvision_arch:
        if not isinstance(name, str) or not name:
            raise ValueError(_unknown(str(name)))
        try:
            factory = resolve_factory(name)
        except LookupError:
            raise ValueError(_unknown(name)) from None
        if size is None:
            raise ValueError(
                f"build_model needs image_size for the model factory {name!r} "
                "(it is called with image_size=(H, W))."
            )
    weights = None
    if pretrained is not None:
        if torchvision_arch and size is not None and not is_state_dict_path(pretrained):
            # The size first: it needs no file.
            enum = torchvision_weights(name, str(pretrained))
            check_image_size(name, size, size_rule(name, enum), hint=_pretrained_hint(name))
        weights = resolve_pretrained(pretrained, model_name=name, torchvision_arch=torchvision_arch)

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if name in MODEL_NAMES:
            if size is not None:
                check_image_size(name, size, SizeRule(_MINIMUM[name]))
            model = (small_cnn if name == "small_cnn" else resnet18_small)(in_channels, num_classes)
            model.image_size = size
        elif torchvision_arch:
            model = build_torchvision(
                name,
                in_channels=in_channels,
                num_classes=num_classes,
                image_size=size,
                weights=None if weights is None else weights.enum,
            )
        else:
            model = build_user_model(
                factory, in_channels=in_channels, num_classes=num_classes, image_size=size
            )
            model.factory_distribution = factory.distribution
    model.name = name

    if weights is not None:
        _load_pretrained(model, weights, torchvision_arch=torchvision_arch)
    if freeze_backbone:
        model.freeze_backbone()
    return model


def _load_pretrained(model: TaiModel, weights, *, torchvision_arch: bool) -> None:
    """Load everything but the head from a located weights file; record its sha256."""
    from tai.modeling.torchvision_models import ignored_prefixes, native_to_model

    source = f"the pretrained weights {weights.spec!r}"
    state = read_state_dict(weights.path, source=source)
    ignored: tuple[str, ...] = ()
    if isinstance(model, EmbeddingClassifier):  # keys "module.*"
        head = () if model.head_name is None else (f"module.{model.head_name}.",)

        def convert(key: str) -> str:
            return "module." + key

    else:  # keys "features.*" and "head.*"
        head = ("head.",)
        convert = native_to_model(model)  # identity for the project's own models
        if torchvision_arch:
            ignored = ignored_prefixes(model.name)
    if str(weights.path) != str(weights.spec):
        source += f" ({weights.path})"
    load_backbone_state(
        model,
        state,
        native_to_model=convert,
        head_prefixes=head,
        ignored_prefixes=ignored,
        source=source,
    )
    model.pretrained = str(weights.spec)
    model.pretrained_sha256 = weights.sha256


def _pretrained_hint(name: str) -> str:
    return (
        ", or train the ViT without pretrained weights at your size"
        if name.startswith("vit_")
        else ""
    )


def default_image_size(
    name: str, pretrained: str | os.PathLike | None = None
) -> tuple[int, int] | None:
    """The image size ``(H, W)`` a torchvision architecture was made for (224 for most; 299
    for ``inception_v3``, 384 for a ViT with SWAG end-to-end weights, ...), with the given
    torchvision weights or its ``DEFAULT`` ones; ``None`` for the project's own models and a
    user's (use the data's size). Reads no file.

    Raises:
        ValueError: ``pretrained`` names weights the architecture does not have.
    """
    from tai.modeling.torchvision_models import is_torchvision_model, size_rule

    if name in MODEL_NAMES or not is_torchvision_model(name):
        return None
    weights = None
    if pretrained not in (None, "") and not is_state_dict_path(pretrained):
        weights = torchvision_weights(name, str(pretrained))
    return size_rule(name, weights).native


def model_config(model: TaiModel) -> dict[str, Any]:
    """What rebuilds ``model`` from its state dict (:func:`model_from_config`), as JSON.

    Keys: ``model`` (the name it was built by), ``factory`` (``"module:function"`` of a
    user's factory, else ``None``), ``in_channels``, ``num_classes``, ``image_size``
    (``[H, W]`` or ``None``), ``model_api`` (:data:`MODEL_API`), and for the lineage
    ``pretrained``, ``pretrained_sha256`` and ``factory_distribution``.
    """
    return {
        "model": model.name,
        "factory": model.factory,
        "factory_distribution": model.factory_distribution,
        "in_channels": int(model.in_channels),
        "num_classes": int(model.num_classes),
        "image_size": None if model.image_size is None else [int(s) for s in model.image_size],
        "model_api": MODEL_API,
        "pretrained": model.pretrained,
        "pretrained_sha256": model.pretrained_sha256,
    }


def _config_image_size(config: Mapping[str, Any]) -> tuple[int, int] | None:
    size = config.get("image_size")
    if size is None and config.get("image_shape") is not None:  # a served model's config
        size = list(config["image_shape"])[1:]
    return None if size is None else image_size_pair(list(size))


def model_from_config(config: Mapping[str, Any]) -> TaiModel:
    """The architecture a config describes, freshly initialised, to load its state dict into.

    Nothing pretrained is read (the state dict holds every weight) and nothing is frozen. A
    user's model is rebuilt from ``factory`` (imported by its path, so the module must be
    importable). A config without ``model_api`` predates torchvision architectures: its
    ``resnet18`` is rebuilt as ``resnet18_small``.

    Raises:
        ValueError: as :func:`build_model`.
    """
    name = config["model"]
    if config.get("model_api") is None and name == "resnet18":
        name = "resnet18_small"
    size = _config_image_size(config)
    model = build_model(
        config.get("factory") or name,
        in_channels=int(config["in_channels"]),
        num_classes=int(config["num_classes"]),
        image_size=size,
    )
    model.name = config["model"] if config.get("model_api") is not None else name
    model.factory_distribution = config.get("factory_distribution")
    return model


def model_requirements(config: Mapping[str, Any]) -> list[str]:
    """pip requirements a served model needs beyond torch, mlflow, numpy and pandas:
    torchvision always (the pyfunc fits images with ``torchvision.transforms.v2``, and the
    architectures are torchvision's), pinned to the installed version."""
    import torchvision

    return [f"torchvision=={torchvision.__version__.split('+')[0]}"]


def model_code_paths(config: Mapping[str, Any]) -> list[Path]:
    """Source a served model needs besides ``tai`` and ``infra``: for a user's factory, the
    folder of its top-level package (or its single module file), to log as ``code_paths``
    so that it serves where that package is not installed. ``[]`` for the other models."""
    import importlib.util

    factory = config.get("factory")
    if not factory:
        return []
    top = factory.split(":")[0].split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise ValueError(f"Cannot find the package {top!r} of the model factory {factory!r}.")
    if spec.submodule_search_locations:
        return [Path(next(iter(spec.submodule_search_locations)))]
    if spec.origin is None:
        raise ValueError(f"The package {top!r} of the model factory {factory!r} has no files.")
    return [Path(spec.origin)]
