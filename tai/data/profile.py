"""Validation and noise profile of a materialised image dataset.

The layout is ``<root>/<dataset>/<split>/<label>/<file>`` with PNG or JPEG files (see
DESIGN.md, "Data model"). :func:`validate_dataset` decodes every image once and reports
counts, size and mode, byte-identical duplicates and class balance; it raises
:class:`DatasetError`, naming the offending file or folder, for anything a training run
would trip over. :func:`noise_profile` estimates the Gaussian noise level of a bounded
sample of images per split and class with the wavelet estimator of Donoho & Johnstone
(1994), ``sigma = median(|HH_1|) / 0.6745`` on the finest diagonal detail coefficients.

Paths in records and in the duplicate groups are POSIX paths relative to ``root``
(``<dataset>/<split>/<label>/<file>``). Hidden files and folders (names starting with
``.``) and files that are not ``.png``, ``.jpg`` or ``.jpeg`` are ignored.
"""

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pywt
from PIL import Image

from tai.data.image_guard import open_image_safely

__all__ = [
    "DatasetError",
    "DatasetSummary",
    "ImageRecord",
    "NoiseProfile",
    "decoded_images_kept",
    "estimate_noise_sigma",
    "load_image",
    "noise_profile",
    "scan_dataset",
    "validate_dataset",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class DatasetError(ValueError):
    """The dataset on disk is not usable; the message names the file or folder to fix."""


class _Kept:
    """Decoded images by path, up to ``limit`` bytes (see :func:`decoded_images_kept`)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.arrays = limit, 0, {}

    def put(self, path: Path, array: np.ndarray) -> None:
        if self.used + array.nbytes <= self.limit:
            self.arrays[str(path)] = array
            self.used += array.nbytes


_KEPT: ContextVar[_Kept | None] = ContextVar("tai_decoded_images_kept", default=None)


@contextmanager
def decoded_images_kept(limit_bytes: int) -> Iterator[None]:
    """Within the block, :func:`load_image` (and :func:`validate_dataset`'s pass) keep
    what they decode, up to ``limit_bytes``, and a later :func:`load_image` of the same
    path returns a copy instead of decoding again. The data card reads the same images
    for validation, the noise profile, the factors and their distributions: without it
    each image of the MNIST sample was decoded three to four times (2026-12-04). Within
    an enclosing block the enclosing one's images are kept and used (its limit holds)."""
    if _KEPT.get() is not None:
        yield
        return
    token = _KEPT.set(_Kept(limit_bytes))
    try:
        yield
    finally:
        _KEPT.reset(token)


@dataclass(frozen=True)
class ImageRecord:
    """One image file: ``path`` relative to the root, its split and its label."""

    path: str
    split: str
    label: str


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`validate_dataset` found.

    Attributes:
        dataset: the dataset folder's name.
        splits: split -> label -> number of images.
        image_size: ``(height, width)`` of most images (the model's default input size).
        mode: ``"L"`` when every image is greyscale, else ``"RGB"`` (what the model takes).
        sizes: ``"HxW"`` -> number of images of that size.
        modes: PIL mode -> number of images.
        num_classes: number of classes.
        classes: class (label folder) names, sorted.
        duplicates: groups of byte-identical files (sha256), paths relative to the root.
        class_balance: split -> smallest class count / largest class count.
    """

    dataset: str
    splits: dict[str, dict[str, int]]
    image_size: tuple[int, int]
    mode: str
    num_classes: int
    classes: list[str]
    duplicates: list[list[str]]
    class_balance: dict[str, float]
    sizes: dict[str, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """A JSON-ready dictionary."""
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        return out


@dataclass(frozen=True)
class NoiseProfile:
    """Noise level estimates per split and class.

    Attributes:
        per_split_class: split -> label -> ``{"median", "p90", "mean"}`` of the per-image
            sigma estimates (images scaled to ``[0, 1]``).
        overall_median: median of all per-image estimates.
    """

    per_split_class: dict[str, dict[str, dict[str, float]]]
    overall_median: float

    def as_dict(self) -> dict:
        """A JSON-ready dictionary."""
        return asdict(self)


def scan_dataset(root: Path, dataset: str) -> list[ImageRecord]:
    """All image files of ``<root>/<dataset>``, sorted by split, label and file name.

    Raises:
        DatasetError: if the dataset folder does not exist.
    """
    layout = _layout(Path(root), dataset)
    return [
        ImageRecord(path=_relative(root, file), split=split, label=label)
        for split, labels in layout.items()
        for label, files in labels.items()
        for file in files
    ]


def validate_dataset(
    root: Path,
    dataset: str,
    *,
    required_splits: Sequence[str] = ("train", "val", "test"),
    on_image: Callable[[ImageRecord, str, np.ndarray], None] | None = None,
) -> DatasetSummary:
    """Check that ``<root>/<dataset>`` is a usable image-folder dataset and summarise it.

    Every image is read once: hashed for duplicates and fully decoded.

    Args:
        root: folder holding the dataset folder.
        dataset: name of the dataset folder.
        required_splits: split folders that must exist.
        on_image: called once per image, in :func:`scan_dataset` order, with its record,
            the sha256 of its bytes and its pixels as :func:`load_image` returns them, so
            a caller that needs every image (the leakage check of the data card) reuses
            this pass instead of reading the files again.

    Returns:
        A :class:`DatasetSummary` over all split folders found.

    Raises:
        DatasetError: the dataset folder is missing; a required split is missing; a split
            or the whole dataset has no class folders; a class folder holds no images; the
            class folders differ between splits; there are fewer than two classes; or an
            image cannot be decoded. Images of different sizes and modes are fine: their
            counts are in the summary, and the data loader brings them to one.
    """
    root = Path(root)
    layout = _layout(root, dataset)
    _check_structure(root / dataset, layout, required_splits)

    files = [
        (ImageRecord(_relative(root, file), split, label), file)
        for split, labels in layout.items()
        for label, fs in labels.items()
        for file in fs
    ]
    by_hash: dict[str, list[str]] = defaultdict(list)
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    for record, file in files:
        data = file.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        by_hash[digest].append(record.path)
        kept = _KEPT.get()
        size, mode, pixels = _decode(file, data, pixels=on_image is not None or kept is not None)
        if kept is not None and pixels is not None:
            kept.put(file, pixels)
        sizes[size] += 1
        modes[mode] += 1
        if on_image is not None:
            on_image(record, digest, pixels)

    splits = {s: {label: len(files) for label, files in ls.items()} for s, ls in layout.items()}
    classes = sorted(next(iter(layout.values())))
    return DatasetSummary(
        dataset=dataset,
        splits=splits,
        image_size=sizes.most_common(1)[0][0],
        mode="L" if set(modes) <= GREY_MODES else "RGB",
        num_classes=len(classes),
        classes=classes,
        duplicates=sorted(sorted(group) for group in by_hash.values() if len(group) > 1),
        class_balance={s: min(c.values()) / max(c.values()) for s, c in splits.items()},
        sizes={f"{h}x{w}": n for (h, w), n in sorted(sizes.items())},
        modes=dict(sorted(modes.items())),
    )


def load_image(path: Path) -> np.ndarray:
    """Decode an image to a float32 array in ``[0, 1]``: ``(H, W)`` or ``(H, W, 3)``.

    Greyscale modes (including 16-bit) stay 2-D; everything else becomes RGB (alpha dropped).

    Raises:
        DatasetError: if the file cannot be decoded, or is too large or a decompression
            bomb (:func:`tai.data.image_guard.open_image_safely`, default limits).
    """
    path = Path(path)
    kept = _KEPT.get()
    if kept is not None and (array := kept.arrays.get(str(path))) is not None:
        return array.copy()  # the caller may change it; what is kept must not change
    try:
        with open_image_safely(path) as image:
            array = _to_float_array(image)
    except _DECODE_ERRORS as err:
        raise _undecodable(path, err) from err
    if kept is not None:
        kept.put(path, array)
        return array.copy()
    return array


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of additive Gaussian noise in an image (Donoho & Johnstone, 1994).

    As :func:`skimage.restoration.estimate_sigma` (without its per-call scipy overhead:
    :func:`_channel_sigma`): the median absolute finest-scale diagonal wavelet coefficient
    divided by 0.6745; for a colour image the channel estimates are averaged.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array; integer images are scaled to ``[0, 1]``
            by their dtype's maximum, float images are taken to be in ``[0, 1]`` already.

    Returns:
        The estimated sigma on the ``[0, 1]`` intensity scale; 0 for a flat image (or a
        channel without any non-zero finest diagonal detail), where skimage has nothing
        to take the median of.

    Raises:
        ValueError: if ``image`` is not 2-D or 3-D, or holds NaN or infinite pixels.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {image.shape}.")
    if image.dtype == np.bool_:
        image = image.astype(np.float64)
    elif np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float64) / np.iinfo(image.dtype).max
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not np.isfinite(image).all():
        raise ValueError("image holds NaN or infinite pixels; fix or drop the image first.")
    channels = [image] if image.ndim == 2 else [image[:, :, c] for c in range(image.shape[2])]
    return float(np.mean([_channel_sigma(channel) for channel in channels]))


# scipy.stats.norm.ppf(0.75): the MAD of a standard normal. skimage's estimate_sigma
# computes it with scipy.stats on every call: 0.16 -> 0.07 ms a 28 x 28 image; the data
# card estimates thousands of images. _channel_sigma is its computation for one channel
# with the constant, equal to it to the last bit (tests/tai/data/test_profile.py).
_NORMAL_MAD = 0.6744897501960817


def _channel_sigma(channel: np.ndarray) -> float:
    """skimage.restoration.estimate_sigma of one 2-D channel (Donoho & Johnstone): the
    median absolute non-zero finest diagonal ``db2`` wavelet coefficient over 0.6745; 0
    when there is none (a flat channel)."""
    detail = pywt.dwtn(channel, wavelet="db2")["dd"]
    detail = detail[np.nonzero(detail)]
    return float(np.median(np.abs(detail)) / _NORMAL_MAD) if detail.size else 0.0


def noise_profile(
    root: Path,
    records: Sequence[ImageRecord],
    *,
    max_per_class: int | None = 200,
    seed: int = 0,
) -> NoiseProfile:
    """Noise level per split and class from a bounded random sample of images.

    Args:
        root: folder the record paths are relative to.
        records: images to profile, e.g. from :func:`scan_dataset`.
        max_per_class: most images estimated per (split, label); ``None`` for all.
        seed: seed of the sample; the same seed gives the same profile.

    Returns:
        A :class:`NoiseProfile`.

    Raises:
        ValueError: if ``records`` is empty or ``max_per_class < 1``.
        DatasetError: if a sampled image cannot be decoded.
    """
    if not records:
        raise ValueError("records is empty: there are no images to profile.")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be at least 1 or None, got {max_per_class}.")
    groups: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for record in records:
        groups[(record.split, record.label)].append(record)

    rng = np.random.default_rng(seed)
    per_split_class: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    every_sigma: list[float] = []
    for (split, label), group in sorted(groups.items()):
        if max_per_class is not None and len(group) > max_per_class:
            picked = np.sort(rng.choice(len(group), size=max_per_class, replace=False))
            group = [group[i] for i in picked]
        sigmas = np.array([estimate_noise_sigma(load_image(Path(root) / r.path)) for r in group])
        per_split_class[split][label] = {
            "median": float(np.median(sigmas)),
            "p90": float(np.percentile(sigmas, 90)),
            "mean": float(sigmas.mean()),
        }
        every_sigma.extend(sigmas.tolist())
    return NoiseProfile(
        per_split_class=dict(per_split_class), overall_median=float(np.median(every_sigma))
    )


def _layout(root: Path, dataset: str) -> dict[str, dict[str, list[Path]]]:
    """split -> label -> sorted image files, for every split and label folder found."""
    dataset_dir = root / dataset
    if not dataset_dir.is_dir():
        found = sorted(p.name for p in _visible_dirs(root)) if root.is_dir() else []
        raise DatasetError(
            f"dataset folder {dataset_dir} does not exist (datasets found in {root}: "
            f"{found}); check the dataset name, or materialise the data commit first."
        )
    return {
        split_dir.name: {
            label_dir.name: sorted(
                p
                for p in label_dir.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
            )
            for label_dir in _visible_dirs(split_dir)
        }
        for split_dir in _visible_dirs(dataset_dir)
    }


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _relative(root: Path, file: Path) -> str:
    return file.relative_to(root).as_posix()


def _check_structure(
    dataset_dir: Path, layout: dict[str, dict[str, list[Path]]], required: Sequence[str]
) -> None:
    missing = [s for s in required if s not in layout]
    if missing:
        raise DatasetError(
            f"split folder(s) {missing} missing in {dataset_dir} (found splits: "
            f"{sorted(layout)}); add {dataset_dir.name}/<split>/<label>/<images> for each "
            f"and commit."
        )
    if not any(layout.values()):
        raise DatasetError(
            f"no classes at all in {dataset_dir}: expected images under "
            f"{dataset_dir.name}/<split>/<label>/; add class folders with images and commit."
        )
    for split, labels in layout.items():
        if not labels:
            raise DatasetError(
                f"split folder {dataset_dir / split} has no class folders; put its images "
                f"in {split}/<label>/ folders and commit."
            )
        for label, files in labels.items():
            if not files:
                raise DatasetError(
                    f"class folder {dataset_dir / split / label} holds no images "
                    f"(PNG/JPEG); add images or remove the folder, and commit."
                )
    class_sets = {split: set(labels) for split, labels in layout.items()}
    all_classes = set().union(*class_sets.values())
    for split, classes in class_sets.items():
        if classes != all_classes:
            raise DatasetError(
                f"class folders differ between splits of {dataset_dir}: split '{split}' lacks "
                f"{sorted(all_classes - classes)} ("
                + ", ".join(f"{s}: {sorted(c)}" for s, c in class_sets.items())
                + "); give every split the same class folders and commit."
            )
    if len(all_classes) < 2:
        raise DatasetError(
            f"{dataset_dir} has a single class, {sorted(all_classes)[0]!r}: a classifier needs "
            f"at least two; add a folder of images for every other class to each split and "
            f"commit."
        )


def _decode(
    file: Path, data: bytes, *, pixels: bool = False
) -> tuple[tuple[int, int], str, np.ndarray | None]:
    """Fully decode ``data`` (size-guarded); return ``((height, width), mode, pixels)``,
    the pixels as :func:`load_image` returns them when asked for, else None."""
    try:
        with open_image_safely(data) as image:
            array = _to_float_array(image) if pixels else None
            return (image.height, image.width), image.mode, array
    except _DECODE_ERRORS as err:
        raise _undecodable(file, err) from err


def _undecodable(path: Path, err: Exception) -> DatasetError:
    return DatasetError(
        f"cannot decode image {path} ({type(err).__name__}: {err}); remove or replace the "
        f"file and commit the change."
    )


def _to_float_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        return np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    if image.mode in ("1", "L", "LA"):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
