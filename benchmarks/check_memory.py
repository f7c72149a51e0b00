"""Peak memory of each evaluation check at a given image size, in one process.

A small CNN on random RGB images (750 in the split, 4 classes), the check options that
`tai run` derives from `TAI_TAI_BUDGET` (`flows/preflight.py`), each check run once while a
thread samples the process's resident memory every 50 ms. Prints, per check, the memory
before it, the peak while it ran, and its wall time.

    .venv/bin/python benchmarks/check_memory.py --size 224 --budget 128
"""

from __future__ import annotations

import argparse
import threading
import time

import torch

from tai.check import EvalContext, check_generator
from tai.evaluation.registry import CheckOptions, evaluation_checks
from tai.modeling.models import build_model


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--budget", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--checks", nargs="*", default=[], help="only these checks")
    args = parser.parse_args()
    n, k, size = 750, 4, args.size
    model = build_model("small_cnn", in_channels=3, num_classes=k, image_size=size, seed=0).eval()

    def load(index: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(index.sum()) + len(index))
        return torch.rand(len(index), 3, size, size, generator=g)

    with torch.no_grad():
        chunks = [torch.arange(i, min(i + 64, n)) for i in range(0, n, 64)]
        probs = torch.cat([model(load(c)).softmax(1) for c in chunks])
        embeddings = torch.cat([model.embed(load(c)) for c in chunks])
    ctx = EvalContext(
        model=model,
        classes=[str(c) for c in range(k)],
        targets=torch.arange(n) % k,
        probs=probs,
        embeddings=embeddings,
        load_images=load,
        abstention_threshold=0.5,
        temperature=1.0,
        n_resamples=200,
    )
    budget = args.budget
    options = CheckOptions(
        corruption_budget=budget,
        explanation_budget=max(budget // 8, 16),
        adversarial_budget=max(budget // 2, 8),
        membership_budget=budget,
        batch_size=args.batch_size,
    )
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    for check in evaluation_checks(options):
        if args.checks and check.name not in args.checks:
            continue
        base = peak[0] = rss_mb()
        started = time.monotonic()
        check.run(ctx, check_generator(0, check.name))
        print(
            f"{check.name:24s} before {base:6.0f} MB  peak {peak[0]:6.0f} MB "
            f"(+{peak[0] - base:5.0f})  {time.monotonic() - started:6.1f} s",
            flush=True,
        )
    stop.set()


if __name__ == "__main__":
    main()
