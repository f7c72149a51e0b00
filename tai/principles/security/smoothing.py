r"""Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld & Kolter 2019).

The smoothed classifier :math:`g(x) = \arg\max_c P(f(x + \varepsilon) = c)`,
:math:`\varepsilon \sim \mathcal N(0, \sigma^2 I)`, of a base classifier :math:`f` is
robust around :math:`x` within the L2 radius

.. math::

    R = \sigma\, \Phi^{-1}(\underline{p_A})

whenever a lower bound :math:`\underline{p_A} > 1/2` of the top class's probability is known
(Cohen et al., "Certified Adversarial Robustness via Randomized Smoothing", ICML 2019,
https://arxiv.org/abs/1902.02918, theorem 1 with :math:`\overline{p_B} = 1 -
\underline{p_A}`). :func:`certified_accuracy` runs the paper's CERTIFY (section 3.2.2,
pseudocode 1) for each image:

1. classify ``n0`` noisy copies and take the most frequent class :math:`\hat c_A`;
2. classify ``n`` fresh noisy copies and count :math:`k` votes for :math:`\hat c_A`;
3. :math:`\underline{p_A}` is the one-sided :math:`(1 - \alpha)` Clopper–Pearson lower bound
   of :math:`k / n` (:func:`clopper_pearson_lower_bound`);
4. abstain if :math:`\underline{p_A} < 1/2`, else predict :math:`\hat c_A` with radius
   :math:`R`.

With probability at least :math:`1 - \alpha` per image, a returned prediction is the smoothed
classifier's and it is robust within :math:`R`. The certified accuracy at radius :math:`r`
is the fraction of images predicted correctly with :math:`R \ge r`; abstentions and wrong
predictions count as errors. The average certified radius (ACR, Zhai et al., "MACER",
ICLR 2020, https://arxiv.org/abs/2001.02378) is the mean of :math:`R` over the images, with 0
for the abstained and misclassified ones.

Even when every noisy copy votes for :math:`\hat c_A` (:math:`k = n`),
:math:`\underline{p_A} = \alpha^{1/n}`, so no radius beyond
:math:`\sigma\,\Phi^{-1}(\alpha^{1/n})` can be certified: about :math:`2.46\,\sigma` for
``n = 1000`` and :math:`\alpha = 0.001`, :math:`3.8\,\sigma` for the paper's ``n = 100000``.

Cost: ``N * (n0 + n)`` forward passes of the base model, ``n0 + n`` noisy copies of each
image in batches of ``batch_size``. Measured on this project's shared 2-core CPU (busy,
torch 2.14, one thread): a small CNN (conv 3->16, conv 16->32 stride 2, linear to 10
classes; 3x32x32 input) classified 2,000 to 4,000 noisy images per second with
``batch_size=500``, so the defaults (``n0=100, n=1000``) take 0.3 to 0.5 s per image, 5 to 9
minutes for 1,000 images; the paper's ``n = 100000`` takes a hundred times that. Budget
``N`` accordingly, or run it on a GPU.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.stats import beta, norm
from torch import Tensor, nn

from tai.principles.security.adversarial import (
    _check_int,
    _check_model,
    _check_real,
    _check_tensors,
)

__all__ = [
    "ABSTAIN",
    "CertificationResult",
    "certified_accuracy",
    "clopper_pearson_lower_bound",
    "radius_key",
]

ABSTAIN = -1
DEFAULT_RADII = (0.0, 0.25, 0.5)


@dataclass(frozen=True)
class CertificationResult:
    """Certified accuracy of a Gaussian-smoothed classifier, and the per-image certificates.

    Attributes:
        sigma: standard deviation of the Gaussian noise, in pixel units of ``[0, 1]`` images.
        n0: noisy copies per image to select the top class.
        n: noisy copies per image to bound its probability.
        alpha: failure probability of each certificate.
        radii: the L2 radii evaluated.
        certified_accuracy: ``certified_accuracy[i]`` is the fraction of images predicted
            correctly with a certified radius >= ``radii[i]``.
        abstention_rate: fraction of images on which CERTIFY abstained.
        average_certified_radius: mean certified radius, 0 for abstained or wrong images.
        predictions: per image, the predicted class or :data:`ABSTAIN` (-1).
        certified_radii: per image, the certified L2 radius (0.0 when abstained).
        pa_lower: per image, the Clopper–Pearson lower bound of the top class's probability.
    """

    sigma: float
    n0: int
    n: int
    alpha: float
    radii: tuple[float, ...]
    certified_accuracy: list[float]
    abstention_rate: float
    average_certified_radius: float
    predictions: tuple[int, ...]
    certified_radii: tuple[float, ...]
    pa_lower: tuple[float, ...]

    def as_dict(self) -> dict[str, float]:
        """Flat scalars for logging and gate policies.

        Keys: ``certified_accuracy_<radius_key(r)>`` per radius (for example
        ``certified_accuracy_r0``, ``certified_accuracy_r0p25``),
        ``smoothing_abstention_rate`` and ``average_certified_radius``.
        """
        out = {
            f"certified_accuracy_{radius_key(r)}": acc
            for r, acc in zip(self.radii, self.certified_accuracy, strict=True)
        }
        out["smoothing_abstention_rate"] = self.abstention_rate
        out["average_certified_radius"] = self.average_certified_radius
        return out


def radius_key(radius: float) -> str:
    """Name of a radius in metric keys: ``r`` and its value to 6 decimals, ``p`` for the point.

    Example:
        >>> [radius_key(r) for r in (0.0, 0.25, 1.0, 0.125)]
        ['r0', 'r0p25', 'r1', 'r0p125']
    """
    return "r" + f"{radius:.6f}".rstrip("0").rstrip(".").replace(".", "p")


def clopper_pearson_lower_bound(successes: int, trials: int, alpha: float) -> float:
    r"""One-sided :math:`(1 - \alpha)` Clopper–Pearson lower confidence bound of a binomial
    proportion (Clopper & Pearson, Biometrika 1934).

    The bound :math:`p_L` solves :math:`P(\mathrm{Bin}(n, p_L) \ge k) = \alpha`, which is the
    :math:`\alpha` quantile of :math:`\mathrm{Beta}(k, n - k + 1)` (``scipy.stats.beta``),
    and 0 for :math:`k = 0`. It equals the lower end of the two-sided :math:`1 - 2\alpha`
    interval that Cohen et al.'s code takes from ``statsmodels``'
    ``proportion_confint(k, n, alpha=2 * alpha, method="beta")``.

    Args:
        successes: :math:`k`, an integer in ``[0, trials]``.
        trials: :math:`n`, an integer >= 1.
        alpha: the bound's failure probability, in ``(0, 1)``.

    Returns:
        :math:`p_L \in [0, 1)`.

    Raises:
        ValueError: for counts or ``alpha`` out of range.

    Example:
        >>> round(clopper_pearson_lower_bound(10, 10, 0.001), 6)  # 0.001 ** (1 / 10)
        0.501187
        >>> round(clopper_pearson_lower_bound(8, 10, 0.05), 4)
        0.4931
    """
    trials = _check_int("trials", trials, 1)
    successes = _check_int("successes", successes, 0)
    if successes > trials:
        raise ValueError(
            f"Expected `successes` <= `trials` = {trials}, but got {successes} successes."
        )
    alpha = _check_alpha(alpha)
    if successes == 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


# ------------------------------------------------------------------------------ validation


def _check_alpha(alpha: object) -> float:
    value = _check_real("alpha", alpha)
    if not 0 < value < 1:
        raise ValueError(
            f"Expected `alpha` in (0, 1) (each certificate's failure probability; the paper "
            f"uses 0.001), but got {alpha!r}."
        )
    return value


def _check_radii(radii: object) -> tuple[float, ...]:
    if isinstance(radii, numbers.Real) or not isinstance(radii, Sequence) or len(radii) == 0:
        raise ValueError(
            f"Expected `radii` to be a non-empty sequence of L2 radii >= 0, but got {radii!r}. "
            "Wrap a single radius in a tuple: (r,)."
        )
    values = tuple(_check_real("radii", r) for r in radii)
    if any(r < 0 for r in values):
        raise ValueError(f"Expected L2 radii >= 0 in `radii`, but got {list(radii)!r}.")
    keys = [radius_key(r) for r in values]
    if len(set(keys)) != len(keys):
        raise ValueError(f"Expected distinct `radii` (to 6 decimals), but got {list(radii)!r}.")
    return values


def _check_args(
    sigma: object, n0: object, n: object, alpha: object, batch_size: object, seed: object
) -> None:
    if _check_real("sigma", sigma) <= 0:
        raise ValueError(
            f"Expected `sigma` > 0 (the noise's standard deviation in pixel units of images in "
            f"[0, 1]; the paper uses 0.12, 0.25, 0.5 and 1.0), but got {sigma!r}."
        )
    _check_int("n0", n0, 1)
    _check_int("n", n, 1)
    _check_alpha(alpha)
    _check_int("batch_size", batch_size, 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"Expected `seed` to be an integer, but got {seed!r}.")


def _check_num_classes(targets: Tensor, num_classes: int) -> None:
    if int(targets.max()) >= num_classes:
        raise ValueError(
            f"Expected class indices < {num_classes} (the model's number of logits) in "
            f"`targets`, but got {int(targets.max())}."
        )


# ---------------------------------------------------------------------------- computation


def _sample_counts(
    model: nn.Module,
    image: Tensor,
    num: int,
    sigma: float,
    batch_size: int,
    generator: torch.Generator,
) -> Tensor:
    """Votes of the base model per class over ``num`` noisy copies of ``image``."""
    counts = []
    for start in range(0, num, batch_size):
        size = min(batch_size, num - start)
        noise = torch.randn(
            (size, *image.shape), generator=generator, dtype=image.dtype, device=image.device
        )
        logits = model(image.unsqueeze(0) + sigma * noise)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != size:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"Expected `model` to return logits of shape ({size}, num_classes) for a batch "
                f"of {size} images, but got {shape}."
            )
        counts.append(torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1]))
    return torch.stack(counts).sum(dim=0).cpu()


def _certify(
    model: nn.Module,
    image: Tensor,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[int, float, float, int]:
    """CERTIFY for one image: (prediction or ABSTAIN, radius, pA lower bound, num classes)."""
    selection = _sample_counts(model, image, n0, sigma, batch_size, generator)
    top = int(selection.argmax())
    estimation = _sample_counts(model, image, n, sigma, batch_size, generator)
    pa_lower = clopper_pearson_lower_bound(int(estimation[top]), n, alpha)
    if pa_lower < 0.5:
        return ABSTAIN, 0.0, pa_lower, len(selection)
    return top, sigma * float(norm.ppf(pa_lower)), pa_lower, len(selection)


def certified_accuracy(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    *,
    sigma: float = 0.25,
    n0: int = 100,
    n: int = 1000,
    alpha: float = 0.001,
    radii: Sequence[float] = DEFAULT_RADII,
    batch_size: int = 500,
    seed: int = 0,
) -> CertificationResult:
    """Certified accuracy of the Gaussian-smoothed ``model`` at each L2 radius in ``radii``.

    Runs CERTIFY (see the module docstring) on each image, with noise drawn from one
    ``torch.Generator`` seeded with ``seed``: the result is deterministic for a given
    ``seed`` and ``batch_size``. The model runs in eval mode under ``torch.no_grad``; its
    mode is restored afterwards.

    Cost: ``N * (n0 + n)`` forward passes (measured throughput in the module docstring);
    memory: one batch of ``batch_size`` noisy copies and their activations.

    Args:
        model: the base classifier, mapping ``(B, C, H, W)`` images in ``[0, 1]`` (plus
            noise, so slightly outside) to logits ``(B, K)``; put any normalisation inside
            it. On the images' device. It should be trained with the same Gaussian noise,
            or it will rarely be certified.
        images: ``(N, C, H, W)`` float tensor in ``[0, 1]``.
        targets: ``(N,)`` integer class indices.
        sigma: the noise's standard deviation, > 0, in pixel units.
        n0: noisy copies to select the top class, >= 1 (the paper: 100).
        n: noisy copies to bound its probability, >= 1 (the paper: 100,000); it caps the
            certifiable radius at ``sigma * Phi^-1(alpha ** (1 / n))``.
        alpha: failure probability of each certificate, in ``(0, 1)`` (the paper: 0.001).
        radii: L2 radii >= 0 at which to report the certified accuracy.
        batch_size: noisy copies per forward pass.
        seed: seed of the noise.

    Returns:
        A :class:`CertificationResult`.

    Raises:
        ValueError: for invalid arguments or tensors, or if ``model`` returns something
            other than ``(B, K)`` logits.

    Example:
        A base model that always says class 1 wins every vote, so each image gets the
        largest radius ``n = 100`` samples allow: ``0.5 * Phi^-1(0.001 ** (1 / 100))``.

        >>> import torch
        >>> class AlwaysOne(torch.nn.Module):
        ...     def forward(self, x):
        ...         return torch.tensor([0.0, 1.0]).repeat(len(x), 1)
        >>> images, targets = torch.rand(3, 1, 4, 4), torch.tensor([1, 1, 0])
        >>> result = certified_accuracy(
        ...     AlwaysOne(), images, targets, sigma=0.5, n0=10, n=100, radii=(0.0, 0.75, 0.8)
        ... )
        >>> result.predictions, [round(r, 4) for r in result.certified_radii]
        ((1, 1, 1), [0.7502, 0.7502, 0.7502])
        >>> [round(a, 4) for a in result.certified_accuracy]
        [0.6667, 0.6667, 0.0]
    """
    _check_model(model)
    _check_args(sigma, n0, n, alpha, batch_size, seed)
    radii = _check_radii(radii)
    _check_tensors(images, targets)
    sigma, alpha = float(sigma), float(alpha)

    generator = torch.Generator(device=images.device).manual_seed(int(seed))
    was_training = model.training
    model.eval()
    certificates = []
    try:
        with torch.no_grad():
            for index, image in enumerate(images):
                certificates.append(
                    _certify(model, image, sigma, n0, n, alpha, batch_size, generator)
                )
                if index == 0:  # fail before the expensive rest
                    _check_num_classes(targets, num_classes=certificates[0][3])
    finally:
        model.train(was_training)

    predictions = tuple(c[0] for c in certificates)
    certified_radii = tuple(c[1] for c in certificates)
    correct = [p == t for p, t in zip(predictions, targets.tolist(), strict=True)]
    total = len(certificates)
    return CertificationResult(
        sigma=sigma,
        n0=int(n0),
        n=int(n),
        alpha=alpha,
        radii=radii,
        certified_accuracy=[
            sum(ok and radius >= r for ok, radius in zip(correct, certified_radii, strict=True))
            / total
            for r in radii
        ],
        abstention_rate=predictions.count(ABSTAIN) / total,
        average_certified_radius=sum(
            radius for ok, radius in zip(correct, certified_radii, strict=True) if ok
        )
        / total,
        predictions=predictions,
        certified_radii=certified_radii,
        pa_lower=tuple(c[2] for c in certificates),
    )
