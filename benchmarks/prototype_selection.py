"""Benchmark: MMD-critic prototype selection at 1k, 10k and 60k embeddings.

Embeddings are 128-d, 10 balanced classes, each class a mixture of three Gaussian modes
(seeded). For every size the selection (2 prototypes and 1 criticism per class, the
defaults) runs ``--repeats`` times; the table gives the median wall time and the median
peak resident memory above the memory held before the call (the kernel's peak-RSS counter,
``VmHWM``, is reset through ``/proc/self/clear_refs`` before each run, so the number is the
run's own peak, torch allocations included, which ``tracemalloc`` does not see). The
project's k-medoids (``tai.principles.transparency.prototypes.select_prototypes``, 2 per class) is
timed on the same
data for comparison.

Usage::

    .venv/bin/python benchmarks/prototype_selection.py [--sizes 1000 10000 60000] [--repeats 3]

It prints a markdown table; nothing is written to disk.
"""

import argparse
import functools
import gc
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tai.principles.transparency.mmd_critic import mmd_critic
from tai.principles.transparency.prototypes import select_prototypes

_STATUS = Path("/proc/self/status")


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", _STATUS.read_text()).group(1))


def _measure(run: Callable[[], object]) -> tuple[float, float]:
    """(seconds, peak MiB above the resident memory before the call)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _rss_kib("VmRSS")
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return seconds, (_rss_kib("VmHWM") - before) / 1024


def _embeddings(n: int, dim: int = 128, classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    modes = torch.randn(classes, 3, dim, generator=g) * 2.0
    which = torch.randint(3, (n,), generator=g)
    points = modes[labels, which] + torch.randn(n, dim, generator=g)
    return points, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 60000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--kmedoids-max",
        type=int,
        default=10000,
        help="skip k-medoids above this size (its cost is quadratic per class)",
    )
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| n | method | median s | runs s | median peak MiB |")
    print("| ---: | --- | ---: | --- | ---: |")
    for n in args.sizes:
        points, labels = _embeddings(n)
        jobs = {
            "mmd_critic (2 protos + 1 crit / class)": functools.partial(mmd_critic, points, labels)
        }
        if n <= args.kmedoids_max:
            jobs["k-medoids select_prototypes (2 / class)"] = functools.partial(
                select_prototypes, points, labels, per_class=2
            )
        for name, job in jobs.items():
            runs = [_measure(job) for _ in range(args.repeats)]
            seconds = [s for s, _ in runs]
            peak = statistics.median(m for _, m in runs)
            listed = ", ".join(f"{s:.2f}" for s in seconds)
            print(f"| {n} | {name} | {statistics.median(seconds):.2f} | {listed} | {peak:.0f} |")


if __name__ == "__main__":
    main()
