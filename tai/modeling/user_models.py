"""Your own model: a factory found by import path or by an installed entry point.

``TAI_MODEL=package.module:factory``, or the name of an entry point of the group
``tai.models`` of an installed distribution::

    # pyproject.toml of your package
    [project.entry-points."tai.models"]
    tiny_net = "my_models.nets:tiny_net"

The factory is called as ``factory(num_classes=..., in_channels=..., image_size=(H, W))``
and returns an ``nn.Module`` (a ``LightningModule`` is one) whose ``forward`` maps images in
``[0, 1]`` of shape ``(N, in_channels, H, W)`` to logits ``(N, num_classes)``, normalising
inside, and that exposes its embedding in one of two ways:

* an ``embed(x)`` method returning ``(N, D)`` features (the penultimate layer), or
* a final ``nn.Linear(D, num_classes)`` head, the last ``nn.Linear`` of the module, whose
  output is what ``forward`` returns; the embedding is then the head's input.

The module is checked on one probe batch when it is built; anything else is a ValueError
naming the factory and what to change.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tai.modeling.classifier import Classifier, EmbeddingClassifier, last_linear, replace_submodule

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelFactory",
    "build_user_model",
    "entry_point_names",
    "resolve_factory",
]

ENTRY_POINT_GROUP = "tai.models"
_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class ModelFactory:
    """A user's factory.

    Attributes:
        name: what was asked for (``TAI_MODEL``): the path or the entry point's name.
        path: ``"module:attribute"``, how serving imports it again.
        fn: the factory.
        distribution: ``"name==version"`` of the entry point's distribution, else ``None``.
    """

    name: str
    path: str
    fn: Callable[..., nn.Module]
    distribution: str | None = None


def entry_point_names() -> tuple[str, ...]:
    """Names of the installed ``tai.models`` entry points."""
    from importlib.metadata import entry_points

    return tuple(sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}))


def _import(path: str, *, what: str) -> Callable[..., nn.Module]:
    if not _PATH.match(path):
        raise ValueError(
            f"Expected the model factory {what} as 'package.module:factory', but got {path!r}."
        )
    module_name, attribute = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - an import may fail in any way
        raise ValueError(
            f"Cannot import module {module_name!r} of model factory {what} "
            f"({type(err).__name__}: {err}). Install the package or put it on PYTHONPATH."
        ) from err
    fn = module
    for part in attribute.split("."):
        if not hasattr(fn, part):
            raise ValueError(
                f"Module {module_name!r} has no attribute {attribute!r} (model factory {what}); "
                "name the function after the colon."
            )
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(
            f"Model factory {what} is a {type(fn).__name__}, not a function; name a function "
            "(or class) that returns an nn.Module."
        )
    return fn


def resolve_factory(name: str) -> ModelFactory:
    """The factory ``name`` names: ``"package.module:factory"`` or an entry point's name.

    Raises:
        ValueError: the path is malformed or does not import, no (or more than one)
            entry point has that name, or the entry point does not load.
    """
    if ":" in name:
        return ModelFactory(name, name, _import(name, what=repr(name)))
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise LookupError(name)
    if len({ep.value for ep in found}) > 1:
        raise ValueError(
            f"Several installed distributions define the {ENTRY_POINT_GROUP!r} entry point "
            f"{name!r}: {', '.join(sorted(ep.value for ep in found))}; uninstall one, or set "
            "TAI_MODEL to the 'package.module:factory' you mean."
        )
    ep = found[0]
    path = re.sub(r"\s+", "", ep.value.split("[")[0])
    try:
        fn = _import(path, what=f"entry point {name!r} = {ep.value!r}")
    except ValueError as err:
        raise ValueError(f"Cannot load model entry point {name!r} = {ep.value!r}: {err}") from err
    dist = getattr(ep, "dist", None)
    distribution = f"{dist.name}=={dist.version}" if dist is not None else None
    return ModelFactory(name, path, fn, distribution)


def _probe(in_channels: int, image_size: tuple[int, int]) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, in_channels, *image_size, generator=generator)


class _EvalMode:
    """Every submodule in eval mode, restored afterwards."""

    def __init__(self, module: nn.Module) -> None:
        self.modes = [(m, m.training) for m in module.modules()]
        self.module = module

    def __enter__(self):
        self.module.eval()

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


def build_user_model(
    factory: ModelFactory, *, in_channels: int, num_classes: int, image_size: tuple[int, int]
) -> Classifier | EmbeddingClassifier:
    """Call a user's factory and wrap what it returns so the project can take its embedding.

    A module with ``embed`` becomes an :class:`EmbeddingClassifier`; one without becomes a
    :class:`Classifier` whose ``head`` is its last ``nn.Linear`` (replaced in the module by
    ``nn.Identity``, so the module is the ``features``), after a probe batch showed that
    ``forward`` returns that layer's output.

    Raises:
        ValueError: the factory does not take the three keyword arguments, fails, returns
            something other than an nn.Module, or a module whose output or embedding is
            not what the contract says (see the module docstring).
    """
    what = f"model factory {factory.name!r}" + (
        f" ({factory.path})" if factory.path != factory.name else ""
    )
    kwargs = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    try:
        inspect.signature(factory.fn).bind(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"The {what} must accept the keyword arguments num_classes, in_channels and "
            f"image_size ({err}); define it as "
            "def factory(*, num_classes, in_channels, image_size)."
        ) from None
    except ValueError:  # no signature (a builtin): call it and see
        pass
    try:
        module = factory.fn(**kwargs)
    except Exception as err:  # noqa: BLE001 - the user's code may fail in any way
        raise ValueError(f"The {what} failed: {type(err).__name__}: {err}") from err
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"The {what} returned a {type(module).__name__}, not a torch.nn.Module; return "
            "the model (an nn.Module or a LightningModule)."
        )
    x = _probe(in_channels, image_size)
    contract = (
        "Give the module an embed(x) method returning the (N, D) penultimate features, or "
        "end it with an nn.Linear(D, num_classes) head whose output forward returns."
    )
    embed = getattr(module, "embed", None)
    if callable(embed):
        with _EvalMode(module), torch.no_grad():
            try:
                out, emb = module(x), embed(x)
            except Exception as err:  # noqa: BLE001
                raise ValueError(
                    f"The module from the {what} failed on a probe batch of shape {tuple(x.shape)} "
                    f"({type(err).__name__}: {err}). Does it take {image_size[0]}x{image_size[1]} "
                    f"images with {in_channels} channels?"
                ) from err
        _check_logits(out, what, x, num_classes)
        if not isinstance(emb, Tensor) or emb.ndim != 2 or emb.shape[0] != len(x):
            raise ValueError(
                f"The embed(x) of the module from the {what} returned "
                f"{_describe(emb)}, not a tensor (N, D) for {len(x)} images; flatten the "
                "penultimate features."
            )
        found = last_linear(module)
        head_name = found[0] if found and found[1].out_features == num_classes else None
        return EmbeddingClassifier(
            module,
            in_channels=in_channels,
            num_classes=num_classes,
            embedding_dim=int(emb.shape[1]),
            name=factory.name,
            factory=factory.path,
            image_size=image_size,
            head_name=head_name,
        )
    found = last_linear(module)
    if found is None:
        raise ValueError(
            f"The module from the {what} has no embed(x) method and no nn.Linear layer, so the "
            f"project cannot find its embedding. {contract}"
        )
    head_name, head = found
    if head.out_features != num_classes:
        raise ValueError(
            f"The last nn.Linear of the module from the {what}, {head_name!r}, has "
            f"{head.out_features} outputs, not num_classes = {num_classes}, so it is not the "
            f"classification head. {contract}"
        )
    seen: list[Tensor] = []
    hook = head.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with _EvalMode(module), torch.no_grad():
            try:
                out = module(x)
            except Exception as err:  # noqa: BLE001
                raise ValueError(
                    f"The module from the {what} failed on a probe batch of shape {tuple(x.shape)} "
                    f"({type(err).__name__}: {err}). Does it take {image_size[0]}x{image_size[1]} "
                    f"images with {in_channels} channels?"
                ) from err
    finally:
        hook.remove()
    _check_logits(out, what, x, num_classes)
    if len(seen) != 1 or not (out is seen[0] or torch.equal(out, seen[0])):
        raise ValueError(
            f"The output of the module from the {what} is not the output of its last nn.Linear "
            f"{head_name!r} (it runs {len(seen)} times, or something follows it), so its input "
            f"is not the embedding. {contract}"
        )
    replace_submodule(module, head_name, nn.Identity())
    model = Classifier(
        module,
        head,
        in_channels=in_channels,
        name=factory.name,
        normalization="none",
        image_size=image_size,
        factory=factory.path,
    )
    model.native_head_name = head_name
    return model


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _check_logits(out: object, what: str, x: Tensor, num_classes: int) -> None:
    if not isinstance(out, Tensor) or tuple(out.shape) != (len(x), num_classes):
        raise ValueError(
            f"The module from the {what} returned {_describe(out)} for a probe batch of shape "
            f"{tuple(x.shape)}; forward must return the logits, a tensor "
            f"({len(x)}, {num_classes})."
        )
