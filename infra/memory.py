"""Give freed memory back to the system promptly (glibc's allocator).

glibc serves an allocation above its mmap threshold with its own mapping, returned to the
system when freed, and anything smaller from its heaps, which keep freed memory for
reuse. The threshold starts at 128 KiB but rises to the size of each large block freed
(up to 32 MiB), so after a few batches every image tensor (a 224x224 RGB image is 588
KiB, a batch of them tens of MiB) comes from the heaps and a run's resident memory keeps
what its largest stages freed. Fixing the threshold keeps it at 128 KiB
(``benchmarks/training_memory.py`` at 224x224: about 160 MB less at every phase, the same
time). There is no Python API for it, hence ``ctypes``; elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Iterator

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024


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
