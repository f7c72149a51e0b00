"""Training augmentation applied to a whole batch at once.

torchvision's ``v2.RandomAffine`` transforms one image at a time: for the small images
of the MNIST sample it built a sampling grid per image and was 60% of the time the
DataLoader spent per batch (18 of 28 s over the demo's two fits, py-spy, 2026-12-04).
:class:`BatchRandomAffine` draws the same parameters per image, builds every grid in one
matrix product and samples the batch with one ``grid_sample``: the same output as
``v2.functional.affine`` image by image (``tests/tai/modeling/test_augmentation.py``).
Written here because torchvision's batched ``RandomAffine`` applies one draw to the
whole batch, and kornia's ``RandomAffine`` samples with other conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import default_collate


def affine_batch(images: Tensor, angle: Tensor, translate: Tensor, scale: Tensor) -> Tensor:
    """Rotate each image by ``angle[i]`` degrees about its centre, scale it by ``scale[i]``
    and shift it by ``translate[i]`` = (dx, dy) pixels; nearest neighbour, 0 outside.

    The matrix and grid are torchvision's (``_get_inverse_affine_matrix`` with no shear,
    ``_affine_grid``), so image ``i`` equals ``v2.functional.affine(images[i], angle[i],
    translate[i], scale[i], shear=[0, 0])``.

    Raises:
        ValueError: ``images`` not a float (N, C, H, W) batch, or parameters not one per image.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float (N, C, H, W) batch, got {images.dtype} {tuple(images.shape)}"
        )
    n, _, h, w = images.shape
    if angle.shape != (n,) or scale.shape != (n,) or translate.shape != (n, 2):
        raise ValueError(
            f"need one angle, scale and (dx, dy) per image: {n} images, angle "
            f"{tuple(angle.shape)}, scale {tuple(scale.shape)}, translate {tuple(translate.shape)}"
        )
    # The inverse matrix in float64, as torchvision computes it in Python floats.
    rad = torch.deg2rad(angle.double())
    cos, sin = rad.cos(), rad.sin()
    tx, ty = translate.double().unbind(1)
    inverse = (
        torch.stack([cos, sin, -cos * tx - sin * ty, -sin, cos, sin * tx - cos * ty], dim=1)
        / scale.double()[:, None]
    )
    theta = inverse.to(images.dtype).view(n, 2, 3)
    base = torch.empty(1, h, w, 3, dtype=images.dtype, device=images.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=images.device))
    base[..., 1].copy_(
        torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=images.device)[:, None]
    )
    base[..., 2].fill_(1)
    half = torch.tensor([0.5 * w, 0.5 * h], dtype=images.dtype, device=images.device)
    rescaled = theta.transpose(1, 2) / half
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(rescaled).view(n, h, w, 2)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


class BatchRandomAffine:
    """``v2.RandomAffine(degrees, translate, scale)`` with its own draw for every image of a
    batch: angle uniform in (-degrees, degrees), shift rounded to whole pixels uniform
    within ``translate`` times the width and height, scale uniform in ``scale``. Draws
    from torch's global generator, as torchvision does (seeded by Lightning's seed and
    per DataLoader worker)."""

    def __init__(
        self,
        degrees: float = 10.0,
        translate: tuple[float, float] = (0.08, 0.08),
        scale: tuple[float, float] = (0.9, 1.1),
    ) -> None:
        self.degrees = float(degrees)
        self.translate = translate
        self.scale = scale

    def __call__(self, images: Tensor) -> Tensor:
        n, _, h, w = images.shape
        angle = torch.empty(n).uniform_(-self.degrees, self.degrees)
        shift = torch.stack(
            [
                torch.empty(n).uniform_(-self.translate[0] * w, self.translate[0] * w),
                torch.empty(n).uniform_(-self.translate[1] * h, self.translate[1] * h),
            ],
            dim=1,
        ).round()
        scale = torch.empty(n).uniform_(*self.scale)
        return affine_batch(images, angle, shift, scale)

    def __repr__(self) -> str:
        return (
            f"BatchRandomAffine(degrees={self.degrees}, translate={self.translate}, "
            f"scale={self.scale})"
        )


class AugmentingCollate:
    """Stack a DataLoader's (image, target) samples, then augment the image batch."""

    def __init__(self, augment: Callable[[Tensor], Tensor]) -> None:
        self.augment = augment

    def __call__(self, samples: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        images, targets = default_collate(samples)
        return self.augment(images), targets
