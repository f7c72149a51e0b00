"""Speed of tai.principles.reliability.calibration.expected_calibration_error against torchmetrics'
functional
``multiclass_calibration_error`` (15 bins, L1) on the same 100k predictions, CPU.

Median of ``--runs`` runs per function, the ratio torchmetrics / ours, and both values
(they agree except for a confidence of exactly 1.0, which torchmetrics puts in a hidden bin
of its own; random softmax outputs have none).

Run: .venv/bin/python benchmarks/ece_speed.py [--n 100000] [--classes 10] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from tai.principles.reliability.calibration import expected_calibration_error


def _time(fn, runs: int) -> tuple[float, float]:
    fn()  # warm-up
    seconds, value = [], 0.0
    for _ in range(runs):
        start = time.perf_counter()
        value = float(fn())
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(args.n, args.classes, generator=g)
    probs = logits.softmax(dim=1)
    target = torch.randint(0, args.classes, (args.n,), generator=g)

    ours, ece = _time(lambda: expected_calibration_error(probs, target, n_bins=15), args.runs)
    theirs, tm_ece = _time(
        lambda: multiclass_calibration_error(
            probs, target, num_classes=args.classes, n_bins=15, norm="l1"
        ),
        args.runs,
    )
    print(
        f"CPU, torch threads = {args.threads}, {args.n:,} predictions, {args.classes} classes, "
        f"15 bins, median of {args.runs} runs."
    )
    print()
    print("| implementation | median time (ms) | ECE |")
    print("|---|---|---|")
    print(
        "| tai.principles.reliability.calibration.expected_calibration_error | "
        f"{1000 * ours:.1f} | {ece:.6f} |"
    )
    print(f"| torchmetrics multiclass_calibration_error | {1000 * theirs:.1f} | {tm_ece:.6f} |")
    print(f"| **ratio torchmetrics / ours** | **{theirs / ours:.2f}x** | |")


if __name__ == "__main__":
    main()
