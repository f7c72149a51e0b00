"""Pretrained weights, from this machine only: a torchvision weights enum found in the local
torch cache, or a state dict file. Nothing is ever downloaded.

``TAI_PRETRAINED`` takes either

* a torchvision weights name for the chosen architecture: ``ResNet18_Weights.IMAGENET1K_V1``,
  ``IMAGENET1K_V1`` or ``DEFAULT``. The file must already be where torchvision caches it,
  ``$TORCH_HOME/hub/checkpoints/<file name of the URL>`` (``TORCH_HOME`` defaults to
  ``~/.cache/torch``; see :func:`torch.hub.get_dir`); without it the error names the path and
  the URL to fetch it from on a machine with network. The file's sha256 must start with the
  hash in its name (as ``torch.hub`` checks it).
* a path to a state dict file (``.pt`` / ``.pth``), loaded with ``weights_only=True``: the
  architecture's own state dict (``torch.save(net.state_dict(), path)``), the state dict of
  a model this project built (keys ``features.*`` / ``head.*``), or of a registered model
  (``model.*`` and ``temperature``, as ``state_dict.pt`` is logged), optionally inside a
  ``{"state_dict": ...}`` container.

Pretrained weights initialise everything but the classification head: the head is always a
fresh layer for the data's classes, and the file's head (of any size) is ignored.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

__all__ = [
    "PretrainedWeights",
    "PretrainedWeightsError",
    "cached_weights_path",
    "is_state_dict_path",
    "load_backbone_state",
    "read_state_dict",
    "resolve_pretrained",
    "sha256_file",
    "torchvision_weights",
]

_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's HASH_REGEX


class PretrainedWeightsError(ValueError):
    """Pretrained weights cannot be found, read or loaded into the architecture."""


@dataclass(frozen=True)
class PretrainedWeights:
    """A located pretrained weights file.

    Attributes:
        spec: what was asked for (``TAI_PRETRAINED``), e.g. ``ResNet18_Weights.IMAGENET1K_V1``.
        path: the file read.
        sha256: the file's sha256 (hex), for the lineage.
        enum: the torchvision weights enum member, or ``None`` for a state dict file.
    """

    spec: str
    path: Path
    sha256: str
    enum: Any = None


def sha256_file(path: Path) -> str:
    """sha256 (hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_WEIGHTS_NAME = re.compile(r"([A-Za-z0-9_]+_Weights\.)?[A-Z0-9_]+")


def is_state_dict_path(spec: str | os.PathLike) -> bool:
    """Whether ``TAI_PRETRAINED`` names a file rather than torchvision weights: a path
    object, or anything but ``[<Enum>_Weights.]<MEMBER>`` (upper case, e.g. ``DEFAULT``)."""
    return isinstance(spec, os.PathLike) or not _WEIGHTS_NAME.fullmatch(str(spec))


def torchvision_weights(model_name: str, spec: str):
    """The torchvision weights enum member ``spec`` names for ``model_name``.

    ``spec`` is ``<Enum>.<MEMBER>`` (``ResNet18_Weights.IMAGENET1K_V1``), ``<MEMBER>`` or
    ``DEFAULT``.

    Raises:
        PretrainedWeightsError: the architecture has no weights, the enum is another
            architecture's or the member does not exist; the message lists the choices.
    """
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(model_name)
    except (ValueError, KeyError) as err:
        raise PretrainedWeightsError(
            f"torchvision has no pretrained weights for {model_name!r}: {err}"
        ) from err
    choices = ", ".join(f"{enum.__name__}.{m.name}" for m in enum) + f", {enum.__name__}.DEFAULT"
    enum_name, _, member = spec.rpartition(".")
    if enum_name and enum_name != enum.__name__:
        raise PretrainedWeightsError(
            f"TAI_PRETRAINED={spec!r} names {enum_name}, but the weights of {model_name} are "
            f"{enum.__name__}; choose one of {choices}."
        )
    if member == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[member]
    except KeyError:
        raise PretrainedWeightsError(
            f"{enum.__name__} has no weights {member!r}; choose one of {choices}."
        ) from None


def cached_weights_path(weights) -> Path:
    """Where ``torch.hub`` caches a torchvision weights file: ``<hub dir>/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def resolve_pretrained(
    spec: str | os.PathLike, *, model_name: str, torchvision_arch: bool
) -> PretrainedWeights:
    """Locate the pretrained weights ``spec`` names and digest the file; downloads nothing.

    Args:
        spec: a torchvision weights name (only for a torchvision architecture) or a path.
        model_name: the architecture, for the enum and the messages.
        torchvision_arch: whether ``model_name`` is a torchvision architecture.

    Raises:
        PretrainedWeightsError: no such file (the message says where to put it and, for
            torchvision weights, the URL to fetch it from), a corrupt cached file, or a
            weights name for a model that is not a torchvision architecture.
    """
    if is_state_dict_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(
                f"The pretrained state dict file {str(path)!r} for {model_name} does not exist. "
                "Set TAI_PRETRAINED to an existing .pt/.pth file, or to torchvision weights "
                "such as DEFAULT for a torchvision architecture."
            )
        return PretrainedWeights(str(spec), path, sha256_file(path))
    spec = str(spec)
    if not torchvision_arch:
        raise PretrainedWeightsError(
            f"TAI_PRETRAINED={spec!r} names torchvision weights, but {model_name!r} is not a "
            "torchvision architecture; give the path of a state dict file (.pt/.pth) instead."
        )
    weights = torchvision_weights(model_name, spec)
    path = cached_weights_path(weights)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"The pretrained weights {type(weights).__name__}.{weights.name} of {model_name} are "
            f"not in the local torch cache: missing file {path}. Nothing is downloaded. On a "
            f"machine with network, fetch {weights.url} and copy it to {path} (the cache is "
            "$TORCH_HOME/hub/checkpoints; TORCH_HOME defaults to ~/.cache/torch), or set "
            "TAI_PRETRAINED to the path of the file."
        )
    digest = sha256_file(path)
    match = _HASH_IN_NAME.search(path.name)
    if match and not digest.startswith(match.group(1)):
        raise PretrainedWeightsError(
            f"The cached weights file {path} is corrupt or not torchvision's: its sha256 "
            f"{digest} does not start with {match.group(1)}, the hash in its name. Delete it "
            f"and fetch {weights.url} again."
        )
    return PretrainedWeights(f"{type(weights).__name__}.{weights.name}", path, digest, weights)


def read_state_dict(path: Path, *, source: str) -> dict[str, Tensor]:
    """A state dict from a file, unpickling nothing but tensors (``weights_only=True``).

    A ``{"state_dict": {...}}`` container is opened.

    Raises:
        PretrainedWeightsError: the file is not a torch file of tensors.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same answer
        reason = _torch_load_reason(err)
        found = re.search(r"GLOBAL ([\w.]+)", reason)
        if isinstance(err, pickle.UnpicklingError) and found:
            # A pickle of Python objects (code that loading would run): refused in one line,
            # without torch's advice to load it with weights_only=False.
            raise PretrainedWeightsError(
                f"{source} ({path}) are not plain weights: they hold Python objects that "
                f"loading would run ({found.group(1)}); refusing to load them. Use a state "
                "dict of tensors from a trusted source, saved with "
                "torch.save(model.state_dict(), path)."
            ) from None
        raise PretrainedWeightsError(
            f"Cannot read {source} ({path}) as a state dict with weights_only=True: {reason}"
        ) from err
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if (
        not isinstance(loaded, Mapping)
        or not loaded
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items())
    ):
        raise PretrainedWeightsError(
            f"{source} ({path}) is not a state dict (a mapping of names to tensors), but "
            f"{type(loaded).__name__}. Save it with torch.save(model.state_dict(), path)."
        )
    return dict(loaded)


def _torch_load_reason(err: Exception) -> str:
    """What ``torch.load`` says is wrong, in one line, without its boilerplate (the advice
    to re-run with ``weights_only=False``, the request to file an issue, the docs link)."""
    boilerplate = ("weights only load failed", "please file an issue", "check the documentation")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    kept = [line for line in lines if not line.lower().startswith(boilerplate)]
    return "; ".join(kept) or (lines[0] if lines else type(err).__name__)


def _shown(keys: Iterable[str], limit: int = 5) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_backbone_state(
    model: nn.Module,
    state: Mapping[str, Tensor],
    *,
    native_to_model: Callable[[str], str],
    head_prefixes: tuple[str, ...],
    ignored_prefixes: tuple[str, ...] = (),
    source: str,
) -> None:
    """Load a state dict into ``model``, all but its head, or name what does not fit.

    Args:
        model: the built model.
        state: the file's state dict, in the model's own key layout or in the layout of the
            architecture it wraps (``native_to_model`` maps those keys to the model's),
            possibly under a ``model.`` prefix (a registered model's ``state_dict.pt``
            with its ``temperature``, or a LightningModule's).
        native_to_model: maps an architecture key to the model's key.
        head_prefixes: key prefixes (in the model's layout) of the head; the file's head
            keys are ignored and the model's head keeps its fresh initialisation.
        ignored_prefixes: file keys (model layout) dropped silently, e.g. auxiliary heads.
        source: names the file in messages.

    Raises:
        PretrainedWeightsError: keys missing from or unexpected in the file (both listed),
            the first tensor whose shape differs, or non-finite values.
    """
    own = model.state_dict()
    layouts = [dict(state)]
    rest = [k for k in state if k != "temperature"]
    if rest and all(k.startswith("model.") for k in rest):
        # a registered model (``model.*`` and ``temperature``) or a LightningModule's
        layouts.append({k.removeprefix("model."): v for k, v in state.items() if k in rest})
    layouts += [{native_to_model(k): v for k, v in layout.items()} for layout in layouts]
    state = max(layouts, key=lambda layout: sum(k in own for k in layout))  # first on ties
    drop = head_prefixes + ignored_prefixes
    state = {k: v for k, v in state.items() if not k.startswith(drop)}
    expected = {k for k in own if not k.startswith(head_prefixes)}
    missing, unexpected = expected - state.keys(), state.keys() - expected
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_shown(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_shown(unexpected)})")
        raise PretrainedWeightsError(
            f"{source} does not match the architecture: {' and '.join(parts)}. Use weights "
            "saved from the same architecture (the head may differ)."
        )
    for key in sorted(state):
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise PretrainedWeightsError(
                f"{source} does not match the architecture: {key} has shape "
                f"{tuple(state[key].shape)} in the file but {tuple(own[key].shape)} in the "
                "model. Use weights of the same architecture variant (and image size, for a ViT)."
            )
    for key in sorted(state):
        value = state[key]
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PretrainedWeightsError(
                f"{source} holds NaN or infinite values in {key}; these weights cannot "
                "initialise the model."
            )
    model.load_state_dict(state, strict=False)
