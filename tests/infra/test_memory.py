"""glibc's mmap threshold, fixed by the pipeline for large images: freed image-sized
blocks go back to the system instead of staying in the allocator's heaps."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

# After a 16 MiB block is freed, glibc's default threshold is 16 MiB, so fifty 4 MiB
# blocks come from the heap; freeing all but the last leaves them resident (the heap
# cannot shrink below the last one). Prints resident MiB with the blocks and after.
PROBE = textwrap.dedent(
    """
    import sys
    import numpy as np
    if sys.argv[1] == "fixed":
        from infra.memory import fix_mmap_threshold
        assert fix_mmap_threshold()
    if sys.argv[1] == "for":
        from infra.memory import fix_mmap_threshold_for
        print(fix_mmap_threshold_for((int(sys.argv[2]), int(sys.argv[3]))), end=" ")
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    big = np.ones(16 * 2**20, np.uint8)
    del big
    blocks = [np.ones(4 * 2**20, np.uint8) for _ in range(50)]
    last = blocks[-1]
    held = rss()
    del blocks
    print(held, rss())
    """
)


def _resident(probe: str, *args: str) -> tuple[float, float]:
    """Run ``probe`` in a fresh Python process; the resident MiB it prints, held and after."""
    out = subprocess.run(
        [sys.executable, "-c", probe, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    held, after = map(float, out.split())
    return held, after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_blocks_go_back_to_the_system_once_the_threshold_is_fixed():
    held, after = _resident(PROBE, "default")
    assert held - after < 50  # the premise: glibc's default keeps the freed 196 MiB
    held, after = _resident(PROBE, "fixed")
    assert held - after > 150  # 49 blocks of 4 MiB returned


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
@pytest.mark.parametrize(
    ("side", "env", "fixed"), [(28, "", False), (224, "", True), (224, "1", False)]
)
def test_the_threshold_is_fixed_for_large_images_only_unless_glibc_is_told_otherwise(
    side, env, fixed
):
    # Fixing it for small images made the demo's checks two to three times slower
    # (infra/memory.py); glibc's own MALLOC_MMAP_THRESHOLD_ takes precedence.
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    if env:
        environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 2**20)  # freed 4 MiB blocks stay
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "for", str(side), "96"],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    answer, held, after = out.split()
    assert answer == str(fixed)
    assert (float(held) - float(after) > 150) == fixed


TRIM_PROBE = textwrap.dedent(
    """
    import numpy as np
    from infra.memory import release_freed_memory
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    blocks = [np.ones(64 * 2**10, np.uint8) for _ in range(3000)]  # heap blocks, 188 MiB
    last = blocks[-1]
    del blocks
    held = rss()
    release_freed_memory()
    print(held, rss())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_released_memory_leaves_the_heap_below_its_last_live_block():
    held, after = _resident(TRIM_PROBE)
    assert held - after > 150, (held, after)


def test_the_heap_is_frozen_for_the_fit_only_and_unfrozen_after_an_error():
    import gc

    from infra.memory import frozen_heap

    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() > 1000
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("a failed fit")
    assert gc.get_freeze_count() == 0
