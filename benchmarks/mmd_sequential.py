"""The MMD permutation test with and without its sequential stop (Besag and Clifford).

The detector self-test's shape on the MNIST sample: 750 reference embeddings, batches of
375 (benign: drawn like the reference) and of 1,000 (shifted: a mean shift of 0.3 standard
deviations along every dimension), 2,000 relabellings (the default), 64 dimensions.
Runs of the full test and of the test that stops at ``MMD_STOP_AFTER`` exceedances
alternate on the same batches and seeds; prints the medians, their ratio, and how many
p-values and alarms (p < 0.001) differ.

Run: .venv/bin/python benchmarks/mmd_sequential.py [--batches 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from tai.monitoring.assess import DEFAULT_N_PERMUTATIONS, MMD_STOP_AFTER
from tai.monitoring.drift import mmd_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = np.random.default_rng(0)
    reference = data.normal(size=(750, 64))
    kinds = {
        "benign": [data.normal(size=(375, 64)) for _ in range(args.batches)],
        "shifted": [data.normal(0.3, 1.0, size=(1000, 64)) for _ in range(3)],
    }
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for kind, batches in kinds.items():
        seconds = {None: [], MMD_STOP_AFTER: []}
        results = {}
        for _ in range(args.repeats):
            for stop in seconds:
                start = time.perf_counter()
                results[stop] = [
                    mmd_test(
                        reference,
                        batch,
                        n_permutations=DEFAULT_N_PERMUTATIONS,
                        max_samples=1000,
                        rng=np.random.default_rng(i),
                        stop_after=stop,
                    )
                    for i, batch in enumerate(batches)
                ]
                seconds[stop].append(time.perf_counter() - start)
        full, seq = statistics.median(seconds[None]), statistics.median(seconds[MMD_STOP_AFTER])
        pairs = list(zip(results[None], results[MMD_STOP_AFTER], strict=True))
        p_diff = sum(a.p_value != b.p_value for a, b in pairs)
        alarms = sum((a.p_value < 0.001) != (b.p_value < 0.001) for a, b in pairs)
        drawn = statistics.median(r.n_permutations for r in results[MMD_STOP_AFTER])
        print(
            f"{len(batches)} {kind} batches: full {full:.2f} s, stopping at {MMD_STOP_AFTER} "
            f"{seq:.2f} s ({full / seq:.1f}x); median relabellings drawn {drawn:.0f} of "
            f"{DEFAULT_N_PERMUTATIONS}; p-values that differ {p_diff}, alarms that differ {alarms}"
        )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
