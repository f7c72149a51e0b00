"""open_image_safely: size limits checked from the header, before any pixel is decoded."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, UnidentifiedImageError

from tai.data.image_guard import DEFAULT_MAX_PIXELS, ImageTooLargeError, open_image_safely
from tai.data.profile import DatasetError, load_image


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG of ``width x height`` black greyscale pixels, built by hand in a few hundred bytes.

    Its one IDAT chunk holds a single row; Pillow fills the rest with zeros, so the file
    decodes to ``width * height`` bytes: the shape of a decompression bomb, without the
    memory needed to write one with Pillow.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" + b"\x00" * width, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


@pytest.fixture
def no_decoding(monkeypatch):
    """Make any pixel decoding fail the test: a refusal must come from the header alone."""

    def decode(self):
        raise AssertionError(f"decoded a {self.size} image that should have been refused")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_normal_png_decodes_to_the_same_pixels_as_pillow(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(12, 9, 3), dtype=np.uint8)
    path = tmp_path / "ok.png"
    path.write_bytes(_png(pixels))

    image = open_image_safely(path)

    assert image.size == (9, 12) and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), pixels)
    np.testing.assert_array_equal(np.asarray(open_image_safely(path.read_bytes())), pixels)


def test_a_jpeg_is_allowed(tmp_path):
    path = tmp_path / "ok.jpg"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format="JPEG")

    assert open_image_safely(path).size == (8, 8)


def test_the_hand_made_bomb_is_a_valid_png_of_its_declared_size():
    image = Image.open(io.BytesIO(_bomb_png(300, 200)))
    image.load()

    assert image.size == (300, 200) and image.getextrema() == (0, 0)


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(tmp_path, no_decoding):
    # 5000 x 5000 = 25 M pixels: above the default limit, below Pillow's own (89.5 M), so
    # the refusal is this module's; the file is a few hundred bytes.
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(5000, 5000))
    assert path.stat().st_size < 1000 and 5000 * 5000 > DEFAULT_MAX_PIXELS

    with pytest.raises(
        ImageTooLargeError,
        match=r"image .*bomb\.png declares 5000x5000 = 25000000 pixels, more than the limit "
        r"of 16777216 pixels; refusing to decode it \(a possible decompression bomb\)",
    ):
        open_image_safely(path)


def test_a_huge_declared_size_beyond_pillows_limit_is_refused_as_too_large(no_decoding):
    # 20000 x 20000 = 400 M pixels is above twice Pillow's limit: Pillow itself raises at
    # open; the caller sees the same error type either way.
    with pytest.raises(ImageTooLargeError, match=r"20000x20000|MAX_IMAGE_PIXELS"):
        open_image_safely(_bomb_png(20000, 20000), max_pixels=10**9)


def test_pillows_bomb_warning_becomes_an_error_without_touching_the_global(monkeypatch):
    data = _png(np.zeros((20, 20), np.uint8))
    # 20 x 20 = 400 pixels: above Pillow's limit (a warning), below twice it (an error).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)

    with pytest.raises(ImageTooLargeError, match=r"Pillow's limit of Image.MAX_IMAGE_PIXELS = 300"):
        open_image_safely(data, max_pixels=10_000)
    assert Image.MAX_IMAGE_PIXELS == 300
    # Outside the guard the warning is a warning again.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Image.open(io.BytesIO(data))
    assert any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)


def test_max_pixels_is_inclusive():
    data = _png(np.zeros((10, 10), np.uint8))

    assert open_image_safely(data, max_pixels=100).size == (10, 10)
    with pytest.raises(ImageTooLargeError, match="10x10 = 100 pixels, more than the limit of 99"):
        open_image_safely(data, max_pixels=99)


def test_a_file_larger_than_max_bytes_is_refused_before_it_is_opened(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png(np.zeros((4, 4), np.uint8)))
    size = path.stat().st_size

    with pytest.raises(
        ImageTooLargeError, match=rf"image .*big\.png has {size} bytes, more than the limit of 10"
    ):
        open_image_safely(path, max_bytes=10)


def test_formats_outside_the_allowed_ones_are_not_parsed():
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, format="BMP")

    with pytest.raises(UnidentifiedImageError):
        open_image_safely(buffer.getvalue())
    assert open_image_safely(buffer.getvalue(), formats=None).size == (4, 4)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "100"])
def test_limits_must_be_positive_integers(bad):
    with pytest.raises(ValueError, match=r"`max_pixels` to be an integer >= 1, but got"):
        open_image_safely(b"", max_pixels=bad)
    with pytest.raises(ValueError, match=r"`max_bytes` to be an integer >= 1, but got"):
        open_image_safely(b"", max_bytes=bad)


def test_a_source_that_is_neither_path_nor_bytes_is_a_type_error():
    with pytest.raises(TypeError, match="Expected a file path or bytes, but got list"):
        open_image_safely([1, 2])


def test_load_image_refuses_a_decompression_bomb_as_a_dataset_error(tmp_path, no_decoding):
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(5000, 5000))

    with pytest.raises(
        DatasetError, match=r"cannot decode image .*bomb\.png \(ImageTooLargeError: .*5000x5000"
    ):
        load_image(path)


def test_dataset_validation_refuses_a_decompression_bomb(tmp_path):
    from tai.data.profile import validate_dataset
    from tests.conftest import write_tiny_dataset

    write_tiny_dataset(tmp_path, counts={"train": 3, "val": 2, "test": 2})
    (tmp_path / "tiny" / "train" / "0" / "bomb.png").write_bytes(_bomb_png(5000, 5000))

    with pytest.raises(DatasetError, match=r"train/0/bomb\.png .*5000x5000"):
        validate_dataset(tmp_path, "tiny")
