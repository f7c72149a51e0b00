"""Fit images of any size and mode to a model's input: the one rule training and serving share.

A model is built for ``in_channels`` (1 grayscale, 3 RGB) and an ``image_size`` ``(H, W)``.
:func:`fit_images` converts the mode first (RGB to grayscale with the ITU-R 601-2 luma
weights of ``torchvision.transforms.v2.functional.rgb_to_grayscale``; grayscale to RGB by
repeating the channel), then scales the image, keeping its aspect ratio, to the smallest
size that covers ``(H, W)`` (bilinear, antialiased) and crops the centre ``(H, W)``. For a
square target this is ``resize(image, [H])`` (shorter side to ``H``) then
``center_crop(image, [H, H])``, exactly as torchvision computes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["covering_size", "fit_images", "image_size_pair"]


def image_size_pair(
    image_size: int | Sequence[int], *, what: str = "image_size"
) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or a pair of positive ints.

    Raises:
        ValueError: not an int or a pair of ints >= 1.
    """
    if isinstance(image_size, bool):
        raise ValueError(
            f"Expected `{what}` to be an int or (height, width), but got {image_size!r}."
        )
    if isinstance(image_size, int):
        pair = (image_size, image_size)
    else:
        try:
            pair = tuple(image_size)
        except TypeError:
            pair = ()
        if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in pair):
            raise ValueError(
                f"Expected `{what}` to be an int or (height, width), but got {image_size!r}."
            )
    if min(pair) < 1:
        raise ValueError(f"Expected `{what}` of at least 1x1 pixels, but got {pair}.")
    return int(pair[0]), int(pair[1])


def covering_size(height: int, width: int, target: Sequence[int]) -> tuple[int, int]:
    """The size ``(h, w)`` the image is resized to before the centre crop to ``target``.

    The aspect ratio is kept and the binding side becomes exactly the target's; the other
    side is truncated as torchvision truncates it (``int(...)``), never below the target.

    Example:
        >>> covering_size(100, 200, (32, 32))
        (32, 64)
        >>> covering_size(100, 400, (32, 64))
        (32, 128)
    """
    th, tw = (int(s) for s in target)
    if th * width >= tw * height:  # th / height >= tw / width: the height binds
        return th, max(tw, int(th * width / height))
    return max(th, int(tw * height / width)), tw


def fit_images(images: Tensor, *, in_channels: int, image_size: int | Sequence[int]) -> Tensor:
    """Convert the mode, resize and centre-crop images to a model's input.

    Args:
        images: a float tensor ``(N, C, H, W)`` or ``(C, H, W)`` in ``[0, 1]`` with
            ``C`` = 1 or 3; any ``H, W``.
        in_channels: the model's channels, 1 (grayscale) or 3 (RGB).
        image_size: the model's ``(H, W)`` (an int for a square).

    Returns:
        A float tensor of the same rank with ``in_channels`` channels and ``image_size``,
        in ``[0, 1]``. Images already in that form are returned unchanged (the same tensor).

    Raises:
        ValueError: not a float tensor of rank 3 or 4 with 1 or 3 channels, or a bad
            ``in_channels`` or ``image_size``.
    """
    from torchvision.transforms.v2 import functional as F

    if (
        not isinstance(images, Tensor)
        or not images.is_floating_point()
        or images.ndim not in (3, 4)
    ):
        raise ValueError(
            "Expected a float tensor of images (N, C, H, W) or (C, H, W) in [0, 1], but got "
            f"{getattr(images, 'dtype', type(images).__name__)} "
            f"of shape {tuple(getattr(images, 'shape', ()))}."
        )
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels}")
    channels = images.shape[-3]
    if channels not in (1, 3):
        raise ValueError(
            f"Expected 1 (grayscale) or 3 (RGB) channels, but got {channels} in shape "
            f"{tuple(images.shape)}. Drop an alpha channel; put channels before height and width."
        )
    th, tw = image_size_pair(image_size)
    if channels == 3 and in_channels == 1:
        images = F.rgb_to_grayscale(images, num_output_channels=1)
    elif channels == 1 and in_channels == 3:
        images = F.grayscale_to_rgb(images)
    h, w = images.shape[-2:]
    size = covering_size(h, w, (th, tw))
    changed = False
    if size != (h, w):
        images = F.resize(
            images, list(size), interpolation=F.InterpolationMode.BILINEAR, antialias=True
        )
        changed = True
    if size != (th, tw):
        images = F.center_crop(images, [th, tw])
        changed = True
    return images.clamp_(0.0, 1.0) if changed else images
