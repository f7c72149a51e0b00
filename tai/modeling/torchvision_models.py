"""Any torchvision classification architecture as a :class:`~tai.modeling.classifier.Classifier`.

``TAI_MODEL`` takes every name of ``torchvision.models.list_models(module=torchvision.models)``
that ends in a linear head (all but ``squeezenet*``, whose classifier is a convolution). The
architecture is built by ``torchvision.models.get_model(name, weights=None,
num_classes=<data's classes>)``; its last ``nn.Linear`` (``fc``, ``classifier[-1]``,
``heads.head``, ``head``) becomes the model's ``head`` and is replaced by ``nn.Identity`` in the
network, which becomes ``features``: ``embed(x)`` is the head's input. Inside the model the
images in ``[0, 1]`` are normalised with the ImageNet mean and std (what the pretrained
weights expect), after a grayscale channel is repeated three times.

Image sizes (:func:`size_rule`): at least 32x32 (the networks downsample by 32), or the
weights' ``min_size`` where that is larger (``inception_v3`` 75, ``alexnet`` 63, ``swin_*``
224, ``swin_v2_*`` 256, ``efficientnet_v2_*`` 33). ``vit_*`` take square images whose side
is a multiple of the patch size, and the model is built for that size; with pretrained
weights exactly the weights' size (224; 384 or 518 for the SWAG end-to-end weights).
``maxvit_t`` takes exactly 224x224.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from torch import nn

from tai.modeling.classifier import Classifier, last_linear, replace_submodule

__all__ = [
    "SizeRule",
    "build_torchvision",
    "check_image_size",
    "is_torchvision_model",
    "size_rule",
    "torchvision_model_names",
]

# Built the same way with and without pretrained weights, so that a trained state dict
# always rebuilds: no auxiliary heads, and the input transform the weights were made for.
_ARCH_KWARGS = {
    "googlenet": {"aux_logits": False, "transform_input": True, "init_weights": True},
    "inception_v3": {"aux_logits": False, "transform_input": True, "init_weights": True},
}
# Keys of a pretrained file the model built above does not have (its auxiliary heads).
_IGNORED_PREFIXES = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
_SMALLEST = 32  # the ImageNet networks downsample by 32


@functools.cache
def torchvision_model_names() -> tuple[str, ...]:
    """The classification architectures of ``torchvision.models``."""
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


def is_torchvision_model(name: str) -> bool:
    return name in torchvision_model_names()


@dataclass(frozen=True)
class SizeRule:
    """The image sizes an architecture takes.

    Attributes:
        minimum: the smallest ``(H, W)``.
        exact: the image must be exactly ``minimum`` (``maxvit_t``, a pretrained ViT).
        square_multiple: > 0 for a ViT: square images whose side is a multiple of it.
        native: the size the weights were made for (their ``transforms().crop_size``; the
            ``DEFAULT`` weights' without weights): a good image size, and the one a ViT or
            MaxViT is built for when none is given.
    """

    minimum: tuple[int, int]
    exact: bool = False
    square_multiple: int = 0
    native: tuple[int, int] | None = None

    def describe(self) -> str:
        if self.exact:
            return f"exactly {self.minimum[0]}x{self.minimum[1]}"
        if self.square_multiple:
            side = self.minimum[0]
            return f"square, a multiple of {self.square_multiple} (at least {side}x{side})"
        return f"at least {self.minimum[0]}x{self.minimum[1]}"


def _vit_patch(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def size_rule(name: str, weights=None) -> SizeRule:
    """The image sizes torchvision architecture ``name`` takes (with ``weights``, if given)."""
    from torchvision.models import get_model_weights

    chosen = weights or get_model_weights(name).DEFAULT
    meta_min = tuple(chosen.meta["min_size"])
    crop = chosen.transforms.keywords.get("crop_size", 224)  # what the weights were made for
    native = (crop, crop)
    if name.startswith("vit_"):
        if weights is not None:
            return SizeRule(meta_min, exact=True, native=meta_min)
        patch = _vit_patch(name)
        return SizeRule((patch, patch), square_multiple=patch, native=native)
    if name.startswith("maxvit"):
        return SizeRule(meta_min, exact=True, native=meta_min)
    minimum = (max(_SMALLEST, meta_min[0]), max(_SMALLEST, meta_min[1]))
    return SizeRule(minimum, native=native)


def check_image_size(
    name: str, image_size: tuple[int, int], rule: SizeRule, *, hint: str = ""
) -> None:
    """Raise a ValueError naming the model, the size and the rule if ``image_size`` breaks it."""
    h, w = image_size
    if rule.exact:
        ok = (h, w) == rule.minimum
    elif rule.square_multiple:
        ok = h == w and h % rule.square_multiple == 0 and h >= rule.minimum[0]
    else:
        ok = h >= rule.minimum[0] and w >= rule.minimum[1]
    if not ok:
        raise ValueError(
            f"model {name!r} cannot take {h}x{w} images: it needs {rule.describe()} "
            f"(height x width). Set the image size (TAI_IMAGE_SIZE) accordingly{hint}."
        )


def build_torchvision(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int] | None,
    weights=None,
) -> Classifier:
    """Torchvision architecture ``name`` with a fresh ``num_classes`` head, no weights loaded.

    ``weights`` (an enum member) only selects the size rule and the ViT size; loading is
    :func:`tai.modeling.pretrained.load_backbone_state`'s.

    Raises:
        ValueError: ``image_size`` too small (or not allowed) for the architecture, or an
            architecture without a linear head.
    """
    from torchvision.models import get_model

    rule = size_rule(name, weights)
    if image_size is not None:
        hint = ""
        if name == "resnet18" and min(image_size) < _SMALLEST:
            hint = ", or use resnet18_small, the ResNet-18 for small images"
        elif name.startswith("vit_") and weights is not None:
            hint = ", or train the ViT without pretrained weights at your size"
        check_image_size(name, image_size, rule, hint=hint)
    kwargs = dict(_ARCH_KWARGS.get(name, {}))
    if rule.exact or rule.square_multiple:  # built for one size: record it
        image_size = image_size or rule.native
    if name.startswith("vit_"):
        kwargs["image_size"] = image_size[0]
    net = get_model(name, weights=None, num_classes=num_classes, **kwargs)
    found = last_linear(net)
    if found is None or found[1].out_features != num_classes:
        raise ValueError(
            f"model {name!r} does not end in an nn.Linear classification head (its classifier "
            "is a convolution), so the project cannot take its embedding; choose another "
            "architecture (e.g. resnet18, mobilenet_v3_small, efficientnet_b0)."
        )
    head_name, head = found
    replace_submodule(net, head_name, nn.Identity())
    model = Classifier(
        net,
        head,
        in_channels=in_channels,
        name=name,
        normalization="imagenet",
        arch_channels=3,
        image_size=image_size,
    )
    model.native_head_name = head_name
    return model


def native_to_model(model: Classifier):
    """Maps a key of the wrapped network's own state dict (``fc.weight``, ``layer1...``) to
    the model's (``head.weight``, ``features.layer1...``); the identity for a model built
    as a Classifier directly (``small_cnn``, ``resnet18_small``). Old DenseNet keys are
    renamed as torchvision renames them."""
    head_name = getattr(model, "native_head_name", None)
    if head_name is None:
        return lambda key: key
    prefix = head_name + "."
    densenet = model.name.startswith("densenet") and model.factory is None

    def convert(key: str) -> str:
        if densenet:
            key = _densenet_key(key)
        if key.startswith(prefix):
            return "head." + key.removeprefix(prefix)
        return "features." + key

    return convert


def ignored_prefixes(name: str) -> tuple[str, ...]:
    return tuple("features." + p for p in _IGNORED_PREFIXES.get(name, ()))


@functools.cache
def _densenet_pattern():
    import re

    # torchvision's own remapping of its old DenseNet checkpoints ("norm.1" -> "norm1")
    return re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
    )


def _densenet_key(key: str) -> str:
    match = _densenet_pattern().match(key)
    return match.group(1) + match.group(2) if match else key
