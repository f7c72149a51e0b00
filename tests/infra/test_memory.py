"""glibc's mmap threshold, fixed by every `tai` command: freed image-sized blocks go back
to the system instead of staying in the allocator's heaps."""

from __future__ import annotations

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
