"""Open untrusted image files without decompression bombs or oversized inputs.

A decompression bomb is a small file that declares huge dimensions: a 20000 x 20000 PNG of
one colour compresses to a few hundred kilobytes but decodes to 400 million pixels
(CWE-409, "Improper Handling of Highly Compressed Data"). :func:`open_image_safely`
refuses, before decoding anything:

1. a file larger than ``max_bytes``;
2. a format other than those allowed (PNG and JPEG by default: fewer decoders parse
   untrusted bytes);
3. declared dimensions (read from the header by ``PIL.Image.open``, which decodes no
   pixels) of more than ``max_pixels``.

Pillow has a limit of its own, the global ``PIL.Image.MAX_IMAGE_PIXELS`` (89.5 million
pixels by default): above it Pillow warns with ``DecompressionBombWarning``, above twice it
raises ``DecompressionBombError``. This module does not change that global (other code in
the process relies on it); it turns the warning into an error locally, with
``warnings.catch_warnings``, and reports both as :class:`ImageTooLargeError`. So the
effective pixel limit is ``min(max_pixels, Image.MAX_IMAGE_PIXELS)``.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "ImageTooLargeError", "open_image_safely"]

DEFAULT_MAX_PIXELS = 4096 * 4096
"""Most pixels (width x height) an image may declare: 16.8 million."""
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Largest image file: 64 MiB."""
DEFAULT_FORMATS = ("PNG", "JPEG")


class ImageTooLargeError(ValueError):
    """An image's file or declared dimensions exceed the limit; the message names both."""


def open_image_safely(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    formats: Sequence[str] | None = DEFAULT_FORMATS,
) -> Image.Image:
    """Open and decode an image after checking its size in bytes and its declared pixels.

    Args:
        source: a file path, or the file's bytes.
        max_pixels: most ``width * height`` the header may declare.
        max_bytes: largest file, in bytes.
        formats: the Pillow format names allowed (e.g. ``("PNG", "JPEG")``); ``None``
            allows every format Pillow knows.

    Returns:
        The decoded image (``load()`` done, file closed).

    Raises:
        ImageTooLargeError: the file has more than ``max_bytes`` bytes or declares more
            than ``max_pixels`` pixels (or more than Pillow's own limit).
        ValueError: a limit is not a positive integer.
        PIL.UnidentifiedImageError: the file is not an image of an allowed format.
        OSError: the file is missing, truncated or corrupt.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buffer = io.BytesIO()
        >>> Image.new("L", (300, 200)).save(buffer, format="PNG")
        >>> open_image_safely(buffer.getvalue()).size
        (300, 200)
        >>> try:
        ...     open_image_safely(buffer.getvalue(), max_pixels=10_000)
        ... except ImageTooLargeError as err:
        ...     print(str(err)[:56])
        image <bytes> declares 300x200 = 60000 pixels, more than
    """
    _limit_validation("max_pixels", max_pixels)
    _limit_validation("max_bytes", max_bytes)
    name, size = _name_and_size(source)
    if size > max_bytes:
        raise ImageTooLargeError(
            f"image {name} has {size} bytes, more than the limit of {max_bytes} bytes; "
            "refusing to decode it. Shrink the file or raise max_bytes."
        )
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(stream, formats=formats) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        f"image {name} declares {width}x{height} = {width * height} pixels, "
                        f"more than the limit of {max_pixels} pixels; refusing to decode it "
                        "(a possible decompression bomb). Resize the image or raise max_pixels."
                    )
                image.load()
                return image
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
            raise ImageTooLargeError(
                f"image {name} exceeds Pillow's limit of Image.MAX_IMAGE_PIXELS = "
                f"{Image.MAX_IMAGE_PIXELS} pixels ({err}); refusing to decode it "
                "(a possible decompression bomb)."
            ) from None


def _name_and_size(source: str | os.PathLike[str] | bytes) -> tuple[str, int]:
    if isinstance(source, bytes):
        return "<bytes>", len(source)
    if not isinstance(source, str | os.PathLike):
        raise TypeError(
            f"Expected a file path or bytes, but got {type(source).__name__}. "
            "Pass the image file's path or its contents."
        )
    path = Path(source)
    return str(path), path.stat().st_size


def _limit_validation(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        example = DEFAULT_MAX_PIXELS if name == "max_pixels" else DEFAULT_MAX_BYTES
        raise ValueError(
            f"Expected argument `{name}` to be an integer >= 1, but got {value!r}. "
            f"Pass a limit, e.g. {name}={example}."
        )
