"""Model factory: image classifiers that expose their penultimate layer.

Every model built here is a :class:`Classifier`: ``features`` maps an image batch in
[0, 1] to an embedding (the penultimate layer) and ``head`` maps the embedding to logits.
The TAI checks use ``embed`` for prototypes and factors of variation, so it is part of
the contract, not an afterthought. Inputs are images in [0, 1]; normalisation happens
inside the model, so corruptions and explanations work in pixel space.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MODEL_NAMES = ("small_cnn", "resnet18")


class Classifier(nn.Module):
    """``features`` (image -> embedding) followed by ``head`` (embedding -> logits)."""

    def __init__(
        self, features: nn.Module, head: nn.Linear, *, in_channels: int, name: str = ""
    ) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.in_channels = in_channels
        self.name = name  # the factory name that rebuilds it (see build_model)

    @property
    def embedding_dim(self) -> int:
        return self.head.in_features

    def embed(self, x: Tensor) -> Tensor:
        """The penultimate-layer embedding of a batch of images in [0, 1]."""
        return self.features((x - 0.5) / 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


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


def resnet18(in_channels: int, num_classes: int) -> Classifier:
    """torchvision's ResNet-18, no downloaded weights, stem adapted to small images.

    The 7x7 stride-2 stem and the max-pool would shrink a 28x28 image to 7x7 before the
    first block, so the stem is a 3x3 stride-1 convolution and the max-pool is dropped
    (the usual CIFAR adaptation).
    """
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    head = net.fc
    net.fc = nn.Identity()  # the ResNet now ends at the pooled 512-d embedding
    return Classifier(net, head, in_channels=in_channels)


def build_model(name: str, *, in_channels: int, num_classes: int, seed: int = 0) -> Classifier:
    """Build a freshly initialised classifier by name, seeded.

    Raises:
        ValueError: ``name`` is not one of :data:`MODEL_NAMES`, or the sizes are not positive.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = (small_cnn if name == "small_cnn" else resnet18)(in_channels, num_classes)
    model.name = name
    return model
