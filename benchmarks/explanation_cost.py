"""Benchmark: cost per image of each attribution method and of the explanation checks.

The model is the project's small CNN (``tai.modeling.models.build_model("small_cnn", in_channels=1,
num_classes=10)``, freshly initialised: cost does not depend on the weights) on random
28x28 grayscale images. Each row is timed ``--repeats`` times on a batch of ``--batch``
images; the table gives the median milliseconds per image. Method settings are the defaults of
:func:`tai.principles.transparency.attribution_methods.attribute` (IG 32 steps, occlusion 4x4
window, stride 2);
the checks use their defaults too (insertion/deletion 20 steps, infidelity 16
perturbations, max-sensitivity 8 perturbations, full randomisation; the last two on the
first ``--sensitivity-batch`` images).

Usage::

    .venv/bin/python benchmarks/explanation_cost.py [--batch 32] [--repeats 3]

It prints a markdown table; nothing is written to disk.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from tai.modeling.models import build_model
from tai.principles.transparency.attribution_methods import METHODS, attribute
from tai.principles.transparency.explain import deletion_auc
from tai.principles.transparency.explanation_quality import (
    infidelity_score,
    insertion_auc,
    randomisation_sanity_check,
    sensitivity_score,
)


def _median_seconds(job: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--sensitivity-batch",
        type=int,
        default=4,
        help="images for max-sensitivity, which re-explains 8 perturbed copies",
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=10)
    x = torch.rand(args.batch, 1, 28, 28)
    target = torch.randint(10, (args.batch,))
    small_x, small_target = x[: args.sensitivity_batch], target[: args.sensitivity_batch]
    maps = attribute(model, x, target, method="integrated_gradients").maps
    for method in METHODS:  # warm-up: first calls pay for lazy initialisation
        attribute(model, x[:1], target[:1], method=method)

    rows: list[tuple[str, int, Callable[[], object]]] = []
    for method in METHODS:
        rows.append(
            (f"attribute {method}", len(x), lambda m=method: attribute(model, x, target, method=m))
        )
    rows += [
        ("insertion_auc (IG maps, blur)", len(x), lambda: insertion_auc(model, x, maps, target)),
        ("deletion_auc (IG maps)", len(x), lambda: deletion_auc(model, x, maps, target)),
        ("infidelity_score (IG maps)", len(x), lambda: infidelity_score(model, x, maps, target)),
    ]
    for method in METHODS:
        rows.append(
            (
                f"sensitivity_score {method}",
                len(small_x),
                lambda m=method: sensitivity_score(model, small_x, small_target, method=m),
            )
        )
    for method in METHODS:
        rows.append(
            (
                f"randomisation_sanity_check {method}",
                len(small_x),
                lambda m=method: randomisation_sanity_check(model, small_x, small_target, method=m),
            )
        )

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"small_cnn 1x28x28, batch {args.batch}\n"
    )
    print("| what | images | median ms / image | runs s (whole batch) |")
    print("| --- | ---: | ---: | --- |")
    for name, n, job in rows:
        median, runs = _median_seconds(job, args.repeats)
        listed = ", ".join(f"{s:.2f}" for s in runs)
        print(f"| {name} | {n} | {1000 * median / n:.1f} | {listed} |", flush=True)


if __name__ == "__main__":
    main()
