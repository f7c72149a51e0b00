"""The two shapes of a TAI model: ``features`` + linear ``head``, or a module with ``embed``.

Both take images in ``[0, 1]`` (normalisation, if any, happens inside), return logits from
``forward`` and the penultimate-layer embedding from ``embed``, and carry what rebuilds them
(:func:`tai.modeling.models.model_config`): ``name``, ``factory``, ``in_channels``,
``num_classes``, ``image_size``, and the pretrained weights they started from.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "NORMALIZATIONS",
    "Classifier",
    "EmbeddingClassifier",
    "last_linear",
    "replace_submodule",
]

NORMALIZATIONS = {
    # (x - 0.5) / 0.5: the project's own models
    "half": ((0.5,), (0.5,)),
    # what torchvision's ImageNet weights expect
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # the model normalises itself (a user's model)
    "none": None,
}


def last_linear(module: nn.Module) -> tuple[str, nn.Linear] | None:
    """``(name, layer)`` of the last ``nn.Linear`` of ``module`` in ``named_modules`` order."""
    found = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            found = (name, sub)
    return found


def replace_submodule(module: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where ``module.get_submodule(name)`` is (``fc``, ``classifier.1``, ...)."""
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, new)


class _TaiModel(nn.Module, abc.ABC):
    """What both model shapes share: identity, input contract and backbone freezing.

    Abstract: a model shape names its backbone and its head's parameters."""

    def _init_identity(
        self,
        *,
        name: str,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int] | None,
        factory: str | None,
    ) -> None:
        self.name = name  # what rebuilds it (see build_model)
        self.factory = factory  # "module:function" of a user's factory, else None
        self.factory_distribution: str | None = None  # "name==version" of its entry point
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = None if image_size is None else tuple(int(s) for s in image_size)
        self.pretrained: str | None = None  # TAI_PRETRAINED as given
        self.pretrained_sha256: str | None = None  # sha256 of the pretrained file read
        self.backbone_frozen = False
        self._frozen: list[nn.Parameter] = []

    # -- freezing ---------------------------------------------------------------------
    @abc.abstractmethod
    def _backbone(self) -> nn.Module:
        """The module that is frozen with the backbone (everything but the head)."""

    @abc.abstractmethod
    def _head_parameters(self) -> list[nn.Parameter]:
        """The classification head's parameters."""

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The classification head's parameters (trained even with a frozen backbone)."""
        yield from self._head_parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter but the head's."""
        head = {id(p) for p in self._head_parameters()}
        yield from (p for p in self.parameters() if id(p) not in head)

    def freeze_backbone(self) -> None:
        """Train only the head: the backbone's parameters stop requiring gradients and its
        layers stay in eval mode (batch-norm statistics and dropout frozen too), whatever
        ``train()`` is called. Gradients still flow to the input (attacks, saliency)."""
        if self.backbone_frozen:
            return
        self._frozen = [p for p in self.backbone_parameters() if p.requires_grad]
        for p in self._frozen:
            p.requires_grad_(False)
        self.backbone_frozen = True
        self.train(self.training)

    def unfreeze_backbone(self) -> None:
        """Train the whole model again (undoes :meth:`freeze_backbone`); call it, e.g., at the
        start of the epoch ``unfreeze_after_epochs``. The optimiser must hold every
        parameter from the start (frozen ones get no gradient, so it skips them)."""
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []
        self.backbone_frozen = False
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:
            # The head is an nn.Linear: its mode changes nothing, so the whole body is eval.
            self._backbone().eval()
        return self


class Classifier(_TaiModel):
    """``features`` (image -> embedding) followed by a linear ``head`` (embedding -> logits).

    Args:
        features: maps a normalised batch to the embedding ``(N, D)``.
        head: ``nn.Linear(D, num_classes)``.
        in_channels: channels of the input images, 1 or 3.
        name: what rebuilds it (see :func:`tai.modeling.models.build_model`).
        normalization: a key of :data:`NORMALIZATIONS` applied inside ``embed``.
        arch_channels: channels the architecture takes; grayscale input (``in_channels``
            1) to a 3-channel architecture is repeated to 3 channels inside the model.
        image_size: ``(H, W)`` it was built for, or ``None``.
        factory: ``"module:function"`` of a user's factory, else ``None``.
    """

    def __init__(
        self,
        features: nn.Module,
        head: nn.Linear,
        *,
        in_channels: int,
        name: str = "",
        normalization: str = "half",
        arch_channels: int | None = None,
        image_size: Sequence[int] | None = None,
        factory: str | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self._init_identity(
            name=name,
            in_channels=in_channels,
            num_classes=head.out_features,
            image_size=image_size,
            factory=factory,
        )
        self.arch_channels = arch_channels or in_channels
        # Where the head sat in the wrapped network ("fc", "classifier.1", ...), else None:
        # maps the network's own state dict keys to the model's (pretrained weights).
        self.native_head_name: str | None = None
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalization {normalization!r}; "
                f"choose one of {', '.join(NORMALIZATIONS)}"
            )
        self.normalization = normalization
        stats = NORMALIZATIONS[normalization]
        if stats is not None:
            # Not persistent: state dicts hold only the weights, as before.
            self.register_buffer("mean", torch.tensor(stats[0]).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(stats[1]).view(1, -1, 1, 1), persistent=False)

    @property
    def embedding_dim(self) -> int:
        return self.head.in_features

    def embed(self, x: Tensor) -> Tensor:
        """The penultimate-layer embedding (the head's input) of images in [0, 1]."""
        if self.arch_channels != x.shape[1]:
            x = x.expand(-1, self.arch_channels, -1, -1)
        if self.normalization != "none":
            x = (x - self.mean) / self.std
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))

    def _backbone(self) -> nn.Module:
        return self.features

    def _head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())


class EmbeddingClassifier(_TaiModel):
    """A user's module that has its own ``embed(x)``: ``forward`` and ``embed`` are its own.

    Args:
        module: the user's model; ``module(x)`` returns logits, ``module.embed(x)`` the
            embedding ``(N, D)``, both for images in [0, 1].
        embedding_dim: ``D``.
        head_name: name (in ``module``) of its last ``nn.Linear`` if that is the
            classification head, else ``None`` (then the backbone cannot be frozen).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        in_channels: int,
        num_classes: int,
        embedding_dim: int,
        name: str,
        factory: str | None,
        image_size: Sequence[int] | None,
        head_name: str | None,
    ) -> None:
        super().__init__()
        self.module = module
        self._init_identity(
            name=name,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            factory=factory,
        )
        self.embedding_dim = embedding_dim
        self.head_name = head_name
        self.normalization = "none"

    @property
    def head(self) -> nn.Linear | None:
        """The module's classification head (its last ``nn.Linear``), if it has one."""
        return None if self.head_name is None else self.module.get_submodule(self.head_name)

    def embed(self, x: Tensor) -> Tensor:
        return self.module.embed(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    def _backbone(self) -> nn.Module:
        return self.module

    def _head_parameters(self) -> list[nn.Parameter]:
        return [] if self.head is None else list(self.head.parameters())

    def freeze_backbone(self) -> None:
        if self.head is None:
            raise ValueError(
                f"model {self.name!r} has no nn.Linear classification head (num_classes "
                "outputs) to keep training, so its backbone cannot be frozen; end it with an "
                "nn.Linear head or train it whole (freeze_backbone=False)."
            )
        super().freeze_backbone()
