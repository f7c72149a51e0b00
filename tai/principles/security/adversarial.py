r"""Accuracy of an image classifier under L-infinity adversarial attacks: FGSM and PGD.

Both attacks look for a perturbation :math:`\delta` with :math:`\|\delta\|_\infty \le
\epsilon` that raises the cross-entropy loss :math:`L` of the true class, on images in
``[0, 1]``:

- FGSM, the fast gradient sign method (Goodfellow, Shlens & Szegedy, "Explaining and
  Harnessing Adversarial Examples", ICLR 2015, https://arxiv.org/abs/1412.6572, eq. 3),
  one step: :math:`x' = \mathrm{clip}_{[0,1]}(x + \epsilon\,\mathrm{sign}(\nabla_x L))`.
- PGD, projected gradient descent (Madry et al., "Towards Deep Learning Models Resistant
  to Adversarial Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083, section 2.1):
  from a uniform random start in the ball, ``steps`` signed-gradient steps of size
  :math:`a`, each projected back onto the ball and onto ``[0, 1]``:
  :math:`x^{t+1} = \Pi_{[0,1] \cap B_\infty(x,\epsilon)}(x^t + a\,\mathrm{sign}(\nabla_x
  L(x^t)))`. The default step size :math:`a = 2.5\,\epsilon/\mathrm{steps}` is the
  paper's rule of thumb (appendix, "step size"), so the walk can cross the ball.

The update and projection follow ``torchattacks.FGSM``/``torchattacks.PGD`` (Kim 2020,
https://github.com/Harry24k/adversarial-attacks-pytorch) step for step, which the tests
use as the reference; this module is our own code because torchattacks pins an old
``requests`` that conflicts with the project's dependencies, and because its attacks draw
the random start from torch's global generator (we take a seeded ``torch.Generator``).
One deliberate difference: the loss is summed over the batch, not averaged, so each
image's gradient, and so its attack, does not depend on the batch size.

:func:`adversarial_accuracy` reports *robust accuracy* as RobustBench does (Croce et al.
2021, https://arxiv.org/abs/2010.09670): an image counts as correct at :math:`\epsilon`
when the model classifies it correctly both clean and after the attack, so only the
clean-correct images are attacked and accuracy at :math:`\epsilon = 0` is the clean
accuracy. Robust accuracy from one attack is an upper bound of the true robust accuracy:
a stronger attack can only lower it.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tai.inputs import check_class_targets, check_image_batch

__all__ = [
    "ATTACKS",
    "AdversarialResult",
    "adversarial_accuracy",
    "epsilon_key",
    "fgsm",
    "pgd",
]

ATTACKS = ("pgd", "fgsm")
DEFAULT_EPSILONS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
_MADRY_STEP_FACTOR = 2.5


@dataclass(frozen=True)
class AdversarialResult:
    """Robust accuracy of a model under one attack at several radii.

    Attributes:
        attack: ``"pgd"`` or ``"fgsm"``.
        epsilons: the L-infinity radii, in pixel units of images in ``[0, 1]``.
        accuracy: robust accuracy per radius, ``accuracy[i]`` at ``epsilons[i]``.
        clean_accuracy: top-1 accuracy on the unperturbed images.
        steps: attack steps (1 for FGSM).
        random_start: whether PGD started from a random point of the ball (False for FGSM).
    """

    attack: str
    epsilons: tuple[float, ...]
    accuracy: list[float]
    clean_accuracy: float
    steps: int
    random_start: bool

    @property
    def mean_accuracy(self) -> float:
        """Mean robust accuracy over the non-zero radii."""
        cells = [a for e, a in zip(self.epsilons, self.accuracy, strict=True) if e > 0]
        return sum(cells) / len(cells)

    def as_dict(self) -> dict[str, float]:
        """Flat scalars for logging and gate policies.

        Keys (``<attack>`` is ``pgd`` or ``fgsm``): ``<attack>_clean_accuracy``,
        ``<attack>_mean_accuracy`` (mean over the non-zero radii) and
        ``<attack>_accuracy_<epsilon_key(eps)>`` per radius, for example
        ``pgd_accuracy_eps_8_255`` or ``pgd_accuracy_eps_0p1``; see :func:`epsilon_key`.
        """
        out = {
            f"{self.attack}_clean_accuracy": self.clean_accuracy,
            f"{self.attack}_mean_accuracy": self.mean_accuracy,
        }
        for eps, acc in zip(self.epsilons, self.accuracy, strict=True):
            out[f"{self.attack}_accuracy_{epsilon_key(eps)}"] = acc
        return out


def epsilon_key(eps: float) -> str:
    """Name of a radius in metric keys, made of ``[a-z0-9_]`` only.

    A multiple of 1/255 (one grey level of an 8-bit image) reads ``eps_<k>_255``, zero
    reads ``eps_0``, anything else its decimal value to 6 places with ``p`` for the point.

    Example:
        >>> [epsilon_key(e) for e in (0.0, 8 / 255, 0.1, 0.5)]
        ['eps_0', 'eps_8_255', 'eps_0p1', 'eps_0p5']
    """
    if eps == 0:
        return "eps_0"
    grey_levels = eps * 255
    if abs(grey_levels - round(grey_levels)) < 1e-6:
        return f"eps_{round(grey_levels)}_255"
    return "eps_" + f"{eps:.6f}".rstrip("0").replace(".", "p")


# ------------------------------------------------------------------------------ validation


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"Expected `{name}` to be a real number, but got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"Expected `{name}` to be finite, but got {value!r}.")
    return float(value)


def _check_eps(eps: object, name: str = "eps") -> float:
    value = _check_real(name, eps)
    if not 0 <= value <= 1:
        raise ValueError(
            f"Expected `{name}` in [0, 1] (an L-infinity radius in pixel units of images in "
            f"[0, 1]; 8/255 = {8 / 255:.4f} is common), but got {eps!r}."
        )
    return value


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}, but got {value!r}.")
    return int(value)


def _check_attack_args(steps: object, step_size: object, random_start: object) -> None:
    _check_int("steps", steps, 1)
    if step_size is not None:
        size = _check_real("step_size", step_size)
        if size <= 0:
            raise ValueError(
                f"Expected `step_size` > 0 or None (for 2.5 * eps / steps), but got {step_size!r}."
            )
    if not isinstance(random_start, bool):
        raise ValueError(f"Expected `random_start` to be True or False, but got {random_start!r}.")


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"Expected `model` to be a torch.nn.Module returning logits, but got "
            f"{type(model).__name__}. Wrap a plain function in an nn.Module."
        )


def _check_tensors(images: object, targets: object) -> None:
    check_image_batch(
        images,
        channels=None,
        hint="Pass images before normalisation and put (x - mean) / std inside the model.",
    )
    check_class_targets(images, targets)


def _logits(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    logits = model(images)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != len(images):
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"Expected `model` to return logits of shape ({len(images)}, num_classes) for a "
            f"batch of {len(images)} images, but got {shape}."
        )
    if int(targets.max()) >= logits.shape[1]:
        raise ValueError(
            f"Expected class indices < {logits.shape[1]} (the model's number of logits) in "
            f"`targets`, but got {int(targets.max())}."
        )
    return logits


# ----------------------------------------------------------------------------- the attacks


@contextlib.contextmanager
def _attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, frozen parameters and autograd on, all restored afterwards.

    Freezing the parameters keeps their ``.grad`` untouched and saves their backward pass;
    ``inference_mode(False)`` lets the attack run inside a Lightning validation loop.
    """
    was_training = model.training
    requires_grad = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in requires_grad:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, flag in requires_grad:
            p.requires_grad_(flag)
        model.train(was_training)


def _loss_gradient(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    images = images.detach().requires_grad_(True)
    # Summed, not averaged: each image's gradient does not depend on the batch size.
    loss = F.cross_entropy(_logits(model, images, targets), targets, reduction="sum")
    return torch.autograd.grad(loss, images)[0]


def _fgsm(model: nn.Module, images: Tensor, targets: Tensor, eps: float) -> Tensor:
    grad = _loss_gradient(model, images, targets)
    return torch.clamp(images + eps * grad.sign(), min=0, max=1).detach()


def _pgd(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    eps: float,
    steps: int,
    step_size: float,
    unit_noise: Tensor | None,
) -> Tensor:
    """PGD from ``images + eps * unit_noise`` (``unit_noise`` uniform in [-1, 1]) or from
    ``images`` when it is None; the same order of operations as torchattacks.PGD."""
    adv = images.clone()
    if unit_noise is not None:
        adv = torch.clamp(adv + eps * unit_noise, min=0, max=1)
    for _ in range(steps):
        adv = adv + step_size * _loss_gradient(model, adv, targets).sign()
        delta = torch.clamp(adv - images, min=-eps, max=eps)
        adv = torch.clamp(images + delta, min=0, max=1).detach()
    return adv


def _unit_noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    noise = torch.rand(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    return 2 * noise - 1


def fgsm(model: nn.Module, images: Tensor, targets: Tensor, eps: float) -> Tensor:
    """FGSM adversarial images (Goodfellow et al. 2015), L-infinity radius ``eps``.

    The model runs in eval mode with its parameters frozen; its mode and the parameters'
    ``requires_grad`` are restored afterwards and no ``.grad`` is written to them.

    Args:
        model: maps ``(B, C, H, W)`` images in ``[0, 1]`` to logits ``(B, K)``; put any
            normalisation inside it. On the images' device.
        images: ``(N, C, H, W)`` float tensor in ``[0, 1]``.
        targets: ``(N,)`` integer class indices.
        eps: L-infinity radius in ``[0, 1]``.

    Returns:
        ``images + eps * sign(grad)``, clamped to ``[0, 1]``, detached.

    Raises:
        ValueError: for invalid arguments or tensors, or if ``model`` returns something
            other than ``(B, K)`` logits.

    Example:
        A linear model's loss gradient for class 0 points along ``w_1 - w_0``, here the
        sign pattern ``[+, -, +, -]``.

        >>> import torch
        >>> model = torch.nn.Linear(4, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [1.0, -1, 2, -2]]))
        >>> x = torch.full((1, 1, 1, 4), 0.5)
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), model)
        >>> fgsm(net, x, torch.tensor([0]), eps=0.25).flatten().tolist()
        [0.75, 0.25, 0.75, 0.25]
    """
    _check_model(model)
    eps = _check_eps(eps)
    _check_tensors(images, targets)
    targets = targets.to(images.device)
    with _attack_mode(model):
        return _fgsm(model, images.clone(), targets, eps)


def pgd(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD adversarial images (Madry et al. 2018), L-infinity radius ``eps``.

    The model runs in eval mode with its parameters frozen; its mode and the parameters'
    ``requires_grad`` are restored afterwards and no ``.grad`` is written to them.

    Args:
        model: maps ``(B, C, H, W)`` images in ``[0, 1]`` to logits ``(B, K)``; put any
            normalisation inside it. On the images' device.
        images: ``(N, C, H, W)`` float tensor in ``[0, 1]``.
        targets: ``(N,)`` integer class indices.
        eps: L-infinity radius in ``[0, 1]``.
        steps: number of gradient steps, >= 1.
        step_size: size of each step; ``None`` for ``2.5 * eps / steps``.
        random_start: start from a uniformly random point of the ball (clamped to
            ``[0, 1]``) instead of from ``images``.
        generator: random generator of the start, on the images' device; ``None`` for
            torch's global one.

    Returns:
        Adversarial images within ``eps`` of ``images`` in L-infinity and in ``[0, 1]``,
        detached.

    Raises:
        ValueError: for invalid arguments or tensors, or if ``model`` returns something
            other than ``(B, K)`` logits.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
        >>> adv = pgd(net, x, y, eps=0.1, generator=torch.Generator().manual_seed(1))
        >>> bool((adv - x).abs().max() <= 0.1 + 1e-6)
        True
    """
    _check_model(model)
    eps = _check_eps(eps)
    _check_attack_args(steps, step_size, random_start)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"Expected `generator` to be a torch.Generator or None, but got "
            f"{type(generator).__name__}."
        )
    _check_tensors(images, targets)
    targets = targets.to(images.device)
    size = _MADRY_STEP_FACTOR * eps / steps if step_size is None else float(step_size)
    with _attack_mode(model):
        images = images.clone()
        noise = _unit_noise(images, generator) if random_start else None
        return _pgd(model, images, targets, eps, steps, size, noise)


# ------------------------------------------------------------------------ robust accuracy


def _check_epsilons(epsilons: object) -> tuple[float, ...]:
    if isinstance(epsilons, numbers.Real) or not isinstance(epsilons, Sequence):
        raise ValueError(
            f"Expected `epsilons` to be a sequence of radii in [0, 1], but got {epsilons!r}. "
            "Wrap a single radius in a tuple: (eps,)."
        )
    values = tuple(_check_eps(e, "epsilons") for e in epsilons)
    if not any(e > 0 for e in values):
        raise ValueError(
            f"Expected at least one radius > 0 in `epsilons`, but got {list(epsilons)!r}."
        )
    keys = [epsilon_key(e) for e in values]
    if len(set(keys)) != len(keys):
        raise ValueError(
            f"Expected distinct radii in `epsilons` (to 6 decimals), but got {list(epsilons)!r}."
        )
    return values


def adversarial_accuracy(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    *,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    attack: str = "pgd",
    steps: int = 10,
    random_start: bool = True,
    seed: int = 0,
    batch_size: int = 256,
) -> AdversarialResult:
    """Robust top-1 accuracy under FGSM or PGD at each radius in ``epsilons``.

    An image counts as correct at ``eps`` when it is classified correctly clean and after
    the attack (RobustBench's convention); only the clean-correct images are attacked and
    ``eps = 0`` gives the clean accuracy. PGD uses the step size ``2.5 * eps / steps`` and,
    with ``random_start``, one uniform start per image drawn from ``seed`` for the whole
    set and scaled by each ``eps``, so the result is the same for every ``batch_size``.

    Cost: per non-zero radius, ``steps`` forward and backward passes (1 for FGSM) plus one
    forward pass per clean-correct image; memory: one uniform noise tensor the size of
    ``images`` (PGD with ``random_start``) plus one batch of activations and gradients.

    Args:
        model: maps ``(B, C, H, W)`` images in ``[0, 1]`` to logits ``(B, K)``; put any
            normalisation inside it. On the images' device. Run in eval mode; its mode
            and its parameters' ``requires_grad`` are restored afterwards.
        images: ``(N, C, H, W)`` float tensor in ``[0, 1]``.
        targets: ``(N,)`` integer class indices.
        epsilons: L-infinity radii in ``[0, 1]``, at least one of them > 0.
        attack: ``"pgd"`` or ``"fgsm"``.
        steps: PGD steps, >= 1 (FGSM is one step; ignored).
        random_start: PGD's uniform random start (ignored for FGSM).
        seed: seed of the random start.
        batch_size: images per forward/backward pass.

    Returns:
        An :class:`AdversarialResult`.

    Raises:
        ValueError: for invalid arguments or tensors, or if ``model`` returns something
            other than ``(B, K)`` logits.

    Example:
        A linear model that separates dark from bright 2x2 images by their mean, with a
        margin of 0.2 in brightness: a radius of 0.1 leaves it intact, 0.3 flips it all.

        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
        ...     _ = net[1].bias.copy_(torch.tensor([2.0, -2.0]))  # boundary: mean 0.5
        >>> x = torch.tensor([0.3, 0.7]).repeat_interleave(4).reshape(2, 1, 2, 2)
        >>> x = x.add(-0.5).mul(0.8).add(0.5)  # brightness 0.34 and 0.66 around 0.5
        >>> y = torch.tensor([0, 1])
        >>> result = adversarial_accuracy(net, x, y, epsilons=(0.0, 0.1, 0.3))
        >>> result.accuracy
        [1.0, 1.0, 0.0]
        >>> sorted(result.as_dict())
        ['pgd_accuracy_eps_0', 'pgd_accuracy_eps_0p1', 'pgd_accuracy_eps_0p3', 'pgd_clean_accuracy', 'pgd_mean_accuracy']
    """  # noqa: E501
    _check_model(model)
    if attack not in ATTACKS:
        raise ValueError(f"Unknown attack {attack!r}. Expected one of {ATTACKS}.")
    eps_values = _check_epsilons(epsilons)
    _check_attack_args(steps, None, random_start)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"Expected `seed` to be an integer, but got {seed!r}.")
    batch_size = _check_int("batch_size", batch_size, 1)
    _check_tensors(images, targets)
    targets = targets.to(images.device)
    if attack == "fgsm":
        steps, random_start = 1, False

    with _attack_mode(model):
        correct = _clean_correct(model, images, targets, batch_size)
        kept_images, kept_targets = images[correct].clone(), targets[correct]
        noise = None
        if attack == "pgd" and random_start:
            generator = torch.Generator(device=images.device).manual_seed(int(seed))
            noise = _unit_noise(images, generator)[correct]
        accuracy = [
            _robust_count(model, kept_images, kept_targets, attack, eps, steps, noise, batch_size)
            / len(images)
            for eps in eps_values
        ]
    return AdversarialResult(
        attack=attack,
        epsilons=eps_values,
        accuracy=accuracy,
        clean_accuracy=int(correct.sum()) / len(images),
        steps=steps,
        random_start=random_start,
    )


def _clean_correct(model: nn.Module, images: Tensor, targets: Tensor, batch_size: int) -> Tensor:
    correct = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch_targets = targets[start : start + batch_size]
            logits = _logits(model, images[start : start + batch_size], batch_targets)
            correct.append(logits.argmax(dim=1) == batch_targets)
    return torch.cat(correct)


def _robust_count(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    attack: str,
    eps: float,
    steps: int,
    unit_noise: Tensor | None,
    batch_size: int,
) -> int:
    if eps == 0:
        return len(images)  # the clean-correct images, unperturbed
    count = 0
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        x, y = images[start:stop], targets[start:stop]
        if attack == "fgsm":
            adv = _fgsm(model, x, y, eps)
        else:
            noise = None if unit_noise is None else unit_noise[start:stop]
            adv = _pgd(model, x, y, eps, steps, _MADRY_STEP_FACTOR * eps / steps, noise)
        with torch.no_grad():
            count += int((model(adv).argmax(dim=1) == y).sum())
    return count
