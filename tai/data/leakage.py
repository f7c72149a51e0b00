"""Leakage between the training split and the held-out splits: the same image in both.

A test image that also occurs in the training split measures what the model remembers,
not how it generalises, and inflates every test metric; a validation image that occurs in
the training split biases early stopping, the temperature and the abstention threshold
fitted on the validation split. :func:`split_leakage` counts, per held-out split, the
images that occur in the training split:

* **exact**: the same file bytes (sha256; the hash :func:`tai.data.profile.validate_dataset`
  already computes for its duplicate groups);
* **near**: a perceptual descriptor within :data:`NEAR_DUPLICATE_DISTANCE` of a training
  image's descriptor, which catches re-encoded (JPEG), re-saved, slightly brightened,
  contrast-stretched or slightly noisy copies.

The descriptor (:func:`image_descriptor`) is the front end of the DCT perceptual hash
(pHash, as ``imagehash.phash`` computes it): the image in greyscale (ITU-R 601 luma),
resized to 32 x 32 (Lanczos), its 2-D DCT-II, the low-frequency block. pHash then keeps the
64 signs of an 8 x 8 block against their median; here the 16 x 16 block is kept as numbers,
without the DC term (brightness) and scaled to unit length (contrast), and two images are
compared by the Euclidean distance of their descriptors. The DCT is orthonormal, so that
distance is the RMS difference of the two images' low-pass versions, each with its mean
removed and divided by its own RMS contrast: 0.10 means the images differ by 10% of their
contrast (20 dB) in the coarse structure that survives JPEG, noise and resizing.

Why not the 64-bit hash and a Hamming threshold (and ``imagehash`` is not installed here):
on the project's own data, the 5,000 MNIST digits of ``infra.sample_data`` (750 test vs
3,500 training digits, all distinct), the 64-bit pHash gives 5 distinct test digits a
training digit with the *same* hash and 428 of 750 one within Hamming distance 6, while
JPEG at quality 75 already moves a copy by up to 8 bits: no threshold separates copies
from distinct digits (a 256-bit hash neither: copies up to 28 bits apart, distinct digits
from 18). Keeping the coefficients as numbers does separate them (measured with this
module; ``tests/tai/data/test_leakage.py`` holds hand-made cases of each kind):

====================================  ===========================================
copies of 300 MNIST test digits       largest distance to the original
====================================  ===========================================
JPEG quality 90 / 75 / 50             0.020 / 0.047 / 0.080
brightness +25/255, contrast x1.1     0.039 / 0.036
Gaussian noise sigma 0.02 / 0.05      0.041 / 0.110 (99th percentile 0.100)
====================================  ===========================================

Distinct images: the nearest training digit of each of the 750 MNIST test digits is at
least 0.167 away (1st percentile 0.189, median 0.51; of the 750 validation digits at least
0.135); the synthetic images of ``tests/conftest.write_tiny_dataset`` (a bright square on
independent noise, 8 to 16 pixels wide) at least 0.16. On Fashion-MNIST (10,000 test vs
60,000 training images) 68 test images come within 0.10 of a training image: those under
0.08 are visibly the same product photo, those between 0.08 and 0.10 mostly the same
product, those above 0.10 mostly similar but different garments. Hence
:data:`NEAR_DUPLICATE_DISTANCE` = 0.10: it keeps every JPEG (quality >= 50), brightness,
contrast and slight-noise (sigma 0.02) copy with a margin, and stays well below the
distinct digits. A flat image (no contrast at all) has the zero descriptor and is never a
near-duplicate of anything; only its bytes can match.

Cost, for ``N_q`` held-out and ``N_t`` training images, ``D = 255`` coefficients: each
image is described once, in the validation pass that already decodes every image (a
resize and a 32 x 32 DCT). The search never compares images in pixel space: the
descriptors are projected on the ``k = 32`` leading principal axes of the training
descriptors, whose distances are lower bounds of the full ones (an orthogonal projection
never lengthens a vector), so a vectorised screen of every pair, ``O(N_q * N_t * k)`` in
matrix products of at most 2^22 numbers (16 MiB) each, misses no match, and only the
``C`` pairs that pass it are measured in full, ``O(C * D)``; the axes are fitted once,
``O(min(N_t, 5000) * D^2 + D^3)``. On Fashion-MNIST (6 * 10^8 pairs) about 2 * 10^4 pass;
10^5 descriptors split 70,000 / 15,000 / 15,000 (2.1 * 10^9 pairs) took 7 s on two busy
CPU cores. Memory: ``O(N * D)`` for the descriptors (100 MB for 10^5 images) and one
block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from scipy.fft import dctn

__all__ = [
    "DESCRIPTOR_SIZE",
    "METHOD",
    "NEAR_DUPLICATE_DISTANCE",
    "LeakPair",
    "SplitLeakage",
    "image_descriptor",
    "nearest_within",
    "split_leakage",
]

#: Side of the greyscale thumbnail the DCT is taken of (pHash's 4 x 8).
_THUMBNAIL = 32
#: Side of the low-frequency DCT block kept; the descriptor drops its DC term.
_BLOCK = 16
DESCRIPTOR_SIZE = _BLOCK * _BLOCK - 1
#: Largest descriptor distance of a near-duplicate (see the module docstring).
NEAR_DUPLICATE_DISTANCE = 0.10
#: Leaking pairs listed per held-out split in the data card (all are counted).
MAX_PAIRS_PER_SPLIT = 50
METHOD = (
    f"sha256 of the file bytes (exact); distance <= {NEAR_DUPLICATE_DISTANCE} between unit "
    f"{_BLOCK}x{_BLOCK} low-frequency DCT descriptors (DC dropped) of the {_THUMBNAIL}x"
    f"{_THUMBNAIL} greyscale thumbnail (near)"
)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Norm below which a descriptor counts as flat: far below 8-bit quantisation.
_FLAT = 1e-6
_SCREEN_DIMS = 32
# Descriptors the screen's axes are fitted on: any orthonormal axes keep it exact, good
# ones keep it selective, and a few thousand descriptors find them.
_BASIS_SAMPLE = 5_000
_BLOCK_NUMBERS = 1 << 22
_PAIRS_PER_BATCH = 1 << 15
# Float32 rounding of the screen's distances is far below this slack.
_SCREEN_SLACK = 1e-3


@dataclass(frozen=True)
class LeakPair:
    """A held-out image that occurs in the training split.

    Attributes:
        split: the held-out split (``"test"``, ``"val"``, ...).
        path: the held-out image, relative to the data root.
        train_path: the training image it matches (its nearest one).
        kind: ``"exact"`` (the same bytes) or ``"near"`` (a near-duplicate).
        distance: descriptor distance of the two (0.0 for an exact pair).
    """

    split: str
    path: str
    train_path: str
    kind: str
    distance: float


@dataclass(frozen=True)
class SplitLeakage:
    """What :func:`split_leakage` found.

    Attributes:
        reference: the split the others are compared with (``"train"``).
        threshold: :data:`NEAR_DUPLICATE_DISTANCE` used.
        counts: held-out split -> ``{"images", "exact", "near", "leaking"}``: its images,
            those byte-identical to a training image, those only near-duplicates of one,
            and the two together. Each held-out image counts once.
        pairs: per held-out split the first ``max_pairs`` leaking images with their nearest
            training image, exact ones first, then by distance.
        max_pairs: the cap on ``pairs`` per split.
    """

    reference: str
    threshold: float
    counts: dict[str, dict[str, int]]
    pairs: list[LeakPair]
    max_pairs: int

    def leaking(self, split: str) -> int:
        """Images of ``split`` that occur in the reference split."""
        return self.counts[split]["leaking"]

    def as_dict(self) -> dict:
        """A JSON-ready dictionary (the data card's ``leakage``)."""
        return {
            "reference": self.reference,
            "method": METHOD,
            "near_threshold": self.threshold,
            "splits": self.counts,
            "pairs": [asdict(p) for p in self.pairs],
            "max_pairs_per_split": self.max_pairs,
        }


def image_descriptor(image: np.ndarray) -> np.ndarray:
    """The perceptual descriptor of one image (see the module docstring).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` pixels in ``[0, 1]`` (as
            :func:`tai.data.profile.load_image` returns them); ``C`` 1, 3 or 4 (alpha
            ignored).

    Returns:
        ``(DESCRIPTOR_SIZE,)`` float32 of unit length, or zeros for a flat image.

    Raises:
        ValueError: ``image`` is not 2-D or 3-D, or is empty.
    """
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim not in (2, 3) or pixels.size == 0:
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {pixels.shape}.")
    if pixels.ndim == 3:
        pixels = pixels[..., 0] if pixels.shape[2] < 3 else pixels[..., :3] @ _LUMA
    thumbnail = Image.fromarray(np.ascontiguousarray(pixels)).resize(
        (_THUMBNAIL, _THUMBNAIL), Image.Resampling.LANCZOS, reducing_gap=3.0
    )
    coefficients = dctn(np.asarray(thumbnail, dtype=np.float64), type=2, norm="ortho")
    low = coefficients[:_BLOCK, :_BLOCK].ravel()[1:]
    norm = float(np.linalg.norm(low))
    if norm < _FLAT:
        return np.zeros(DESCRIPTOR_SIZE, dtype=np.float32)
    return (low / norm).astype(np.float32)


def nearest_within(
    queries: np.ndarray, references: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """For each query, its nearest reference within Euclidean ``radius``, exactly.

    Screens every pair on a ``k``-dimensional projection (a lower bound of the distance)
    in blocks of bounded size, then measures the surviving pairs in full; see the module
    docstring for the cost. Ties go to the lower reference index.

    Args:
        queries: ``(N_q, D)`` descriptors.
        references: ``(N_r, D)`` descriptors.
        radius: largest distance of a match, ``>= 0``.

    Returns:
        ``(index, distance)``: ``(N_q,)`` int64 position of the nearest reference (``-1``
        when none lies within ``radius``) and ``(N_q,)`` float64 distance (``inf`` then).

    Raises:
        ValueError: on shapes that do not match or a negative ``radius``.
    """
    q = np.asarray(queries, dtype=np.float32)
    r = np.asarray(references, dtype=np.float32)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise ValueError(
            f"queries and references must be (N, D) arrays of the same D, got shapes "
            f"{q.shape} and {r.shape}."
        )
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}.")
    return _Screen(r).nearest(q, radius)


class _Screen:
    """The references of :func:`nearest_within`, projected once for any number of queries."""

    def __init__(self, references: np.ndarray) -> None:
        self.references = np.asarray(references, dtype=np.float32)
        n, dims = self.references.shape
        self.basis = np.zeros((dims, 0), np.float32)
        self.augmented = np.zeros((2, 0), np.float32)
        if n == 0:
            return
        self.basis = _principal_axes(self.references, min(_SCREEN_DIMS, dims))
        projected = self.references @ self.basis
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b in one product: [a, |a|^2, 1] . [-2b, 1, |b|^2].
        self.augmented = np.hstack(
            [
                -2.0 * projected,
                np.ones((n, 1), np.float32),
                (projected * projected).sum(1, keepdims=True),
            ]
        ).T.copy()

    def nearest(self, queries: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, dtype=np.float32)
        r, n = self.references, len(self.references)
        index = np.full(len(queries), -1, dtype=np.int64)
        distance = np.full(len(queries), np.inf)
        if len(queries) == 0 or n == 0:
            return index, distance
        projected = queries @ self.basis
        augmented = np.hstack(
            [
                projected,
                (projected * projected).sum(1, keepdims=True),
                np.ones((len(queries), 1), np.float32),
            ]
        )
        screen = (radius + _SCREEN_SLACK) ** 2
        rows = max(1, _BLOCK_NUMBERS // n)
        for start in range(0, len(queries), rows):
            # flatnonzero: many times faster than a 2-D nonzero on a sparse mask.
            flat = np.flatnonzero(augmented[start : start + rows] @ self.augmented <= screen)
            for s in range(0, len(flat), _PAIRS_PER_BATCH):
                a, b = np.divmod(flat[s : s + _PAIRS_PER_BATCH], n)
                a += start
                diff = queries[a].astype(np.float64) - r[b].astype(np.float64)
                d = np.sqrt((diff * diff).sum(1))
                keep = d <= radius
                _keep_nearest(index, distance, a[keep], b[keep], d[keep])
        return index, distance


def split_leakage(
    paths: Sequence[str],
    splits: Sequence[str],
    sha256: Sequence[str],
    descriptors: np.ndarray,
    *,
    reference: str = "train",
    threshold: float = NEAR_DUPLICATE_DISTANCE,
    max_pairs: int = MAX_PAIRS_PER_SPLIT,
) -> SplitLeakage:
    """Images of every other split that also occur in the ``reference`` split.

    Args:
        paths: each image's path (as in the data card), aligned with the rest.
        splits: each image's split.
        sha256: each image's sha256 of its file bytes.
        descriptors: ``(N, DESCRIPTOR_SIZE)`` :func:`image_descriptor` of each image.
        reference: the training split.
        threshold: largest descriptor distance of a near-duplicate.
        max_pairs: leaking images listed per held-out split (all are counted).

    Returns:
        A :class:`SplitLeakage`; a held-out image that matches a training image both ways
        counts as exact.

    Raises:
        ValueError: inputs of different lengths, no image of ``reference``, or a
            negative ``threshold`` or ``max_pairs``.
    """
    n = len(paths)
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if not (len(splits) == len(sha256) == descriptors.shape[0] == n):
        raise ValueError(
            f"paths, splits, sha256 and descriptors must describe the same images, got "
            f"{n}, {len(splits)}, {len(sha256)} and {descriptors.shape[0]}."
        )
    if threshold < 0 or max_pairs < 0:
        raise ValueError(f"threshold and max_pairs must be >= 0, got {threshold}, {max_pairs}.")
    is_ref = np.array([s == reference for s in splits], dtype=bool)
    if not is_ref.any():
        raise ValueError(
            f"no image of the reference split {reference!r} (splits: {sorted(set(splits))})."
        )
    ref_at = np.flatnonzero(is_ref)
    first_ref_by_hash: dict[str, str] = {}
    for i in sorted(ref_at, key=lambda i: paths[i]):
        first_ref_by_hash.setdefault(sha256[i], paths[i])
    # Flat images have no descriptor to compare: only their bytes can match.
    textured = np.linalg.norm(descriptors, axis=1) >= _FLAT
    ref_textured = ref_at[textured[ref_at]]
    screen = _Screen(descriptors[ref_textured])

    counts: dict[str, dict[str, int]] = {}
    pairs: list[LeakPair] = []
    for split in sorted(set(splits) - {reference}):
        at = np.flatnonzero(np.array([s == split for s in splits], dtype=bool))
        near_at = at[textured[at]]
        nearest, dist = screen.nearest(descriptors[near_at], threshold)
        near_of = {
            int(i): (paths[ref_textured[j]], float(d))
            for i, j, d in zip(near_at, nearest, dist, strict=True)
            if j >= 0
        }
        found: list[LeakPair] = []
        for i in at:
            if sha256[i] in first_ref_by_hash:
                found.append(LeakPair(split, paths[i], first_ref_by_hash[sha256[i]], "exact", 0.0))
            elif int(i) in near_of:
                train_path, d = near_of[int(i)]
                found.append(LeakPair(split, paths[i], train_path, "near", round(d, 4)))
        exact = sum(p.kind == "exact" for p in found)
        counts[split] = {
            "images": len(at),
            "exact": exact,
            "near": len(found) - exact,
            "leaking": len(found),
        }
        found.sort(key=lambda p: (p.kind != "exact", p.distance, p.path))
        pairs.extend(found[:max_pairs])
    return SplitLeakage(reference, threshold, counts, pairs, max_pairs)


def _principal_axes(x: np.ndarray, k: int) -> np.ndarray:
    """``(D, k)`` orthonormal leading principal axes of (an evenly spaced sample of) ``x``."""
    step = max(1, -(-len(x) // _BASIS_SAMPLE))
    sample = x[::step] - x[::step].mean(0)
    # Eigenvectors of the D x D scatter matrix: cheaper than an SVD of the sample.
    _, vectors = np.linalg.eigh((sample.T @ sample).astype(np.float64))
    return np.ascontiguousarray(vectors[:, ::-1][:, :k], dtype=np.float32)


def _keep_nearest(
    index: np.ndarray, distance: np.ndarray, a: np.ndarray, b: np.ndarray, d: np.ndarray
) -> None:
    """Record, per query in ``a``, the nearest of its pairs ``(b, d)`` if nearer than before."""
    if len(a) == 0:
        return
    order = np.lexsort((b, d, a))
    a, b, d = a[order], b[order], d[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = a[1:] != a[:-1]
    a, b, d = a[first], b[first], d[first]
    nearer = d < distance[a]
    index[a[nearer]], distance[a[nearer]] = b[nearer], d[nearer]
