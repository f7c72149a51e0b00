"""Give freed memory back to the system promptly (glibc's allocator).

glibc serves an allocation above its mmap threshold with its own mapping, returned to the
system when freed, and anything smaller from its heaps, which keep freed memory for
reuse. The threshold starts at 128 KiB but rises to the size of each large block freed
(up to 32 MiB), so after a few batches every image tensor (a 224x224 RGB image is 588
KiB, a batch of them tens of MiB) comes from the heaps and a run's resident memory keeps
what its largest stages freed. Fixing the threshold keeps it at 128 KiB
(``benchmarks/training_memory.py`` at 224x224: about 160 MB less at every phase).

It costs time: every tensor above 128 KiB is then mapped and unmapped, its pages
faulted in again on each use. Fifty forward and backward passes of the small CNN
(2026-12-04, quiet machine, torch's two threads): 64 images of 28x28, 0.98 s -> 2.02 s;
16 of 224x224, 2.43 s -> 3.49 s. Set process-wide from every `tai` command it made the
demo's checks two to three times slower, so the pipeline fixes it only for large
images (:func:`fix_mmap_threshold_for`), where the memory is the constraint. glibc's own
``MALLOC_MMAP_THRESHOLD_`` environment variable overrides both ways. There is no Python
API for it, hence ``ctypes``; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
from collections.abc import Iterator

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024
#: Inputs at least this many pixels a side get the fixed threshold (memory first).
LARGE_IMAGE_SIDE = 128


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at 128 KiB; True when it was set. Child processes
    started by fork (DataLoader workers) keep the setting."""
    libc = _libc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)


def fix_mmap_threshold_for(size: tuple[int, int]) -> bool:
    """:func:`fix_mmap_threshold` when the model's input is at least
    :data:`LARGE_IMAGE_SIDE` pixels a side and ``MALLOC_MMAP_THRESHOLD_`` is not set;
    True when it was set. Below that size batches are a few MiB, the memory saved is small
    and the time lost large (see the module's doc)."""
    if max(size) < LARGE_IMAGE_SIDE or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return fix_mmap_threshold()


def release_freed_memory() -> None:
    """Collect garbage and hand glibc's free heap pages back to the system
    (``malloc_trim``): what earlier stages freed stops counting before a large one."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Around a fit with DataLoader worker processes: collect, trim, then move every
    object to the collector's permanent generation (``gc.freeze``), so a forked worker's
    collector does not write to the parent's objects and copy their pages; unfrozen
    afterwards. Measured at 224x224 (BENCHMARKS.md, Scale): the fit's peak 3.04 ->
    2.97 GB, but each worker's own peak did not drop (0.55-0.59 GB), so the gain may be
    the trim's, or noise between runs."""
    release_freed_memory()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
