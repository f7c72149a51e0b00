"""The check: the unit every TAI measurement is built from.

A check is to this project what a ``Metric`` is to torchmetrics: it declares its name,
the TAI principle it serves, the lifecycle stage it runs in and the metrics it reports
(:class:`MetricSpec`: name, direction, unit, whether it has a confidence interval and
whether it can be compared with the champion). The evaluation loop, the gate policy's
valid names and directions, the reports, the EU AI Act map and the README's metric
table all read these declarations (through :mod:`tai.evaluation.registry`) instead of
repeating metric names.

An evaluation check runs once per model version on the held-out split
(:meth:`Check.run` with an :class:`EvalContext` and its own random generator) and returns
a :class:`CheckResult`: every declared metric (NaN where the check cannot apply, with
the reason), the confidence bounds it computed, and its typed result for the report.
"""

from __future__ import annotations

import abc
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


class Principle(StrEnum):
    """The six principles of trustworthy AI the checks are grouped by."""

    RELIABILITY = "reliability"
    TRANSPARENCY = "transparency"
    FAIRNESS = "fairness"
    PRIVACY = "privacy"
    SECURITY = "security"
    AUTONOMY = "autonomy"  # autonomy and control: human oversight

    @property
    def title(self) -> str:
        return "autonomy & control" if self is Principle.AUTONOMY else self.value


class Stage(StrEnum):
    """The lifecycle stage (CRISP-ML(Q)) a check runs in."""

    DATA = "data"  # data engineering: the data card, drift between data commits
    MODEL = "model"  # model engineering: training-time callbacks
    EVALUATION = "evaluation"  # held-out evaluation of a trained model
    MONITORING = "monitoring"  # unlabeled production batches of a deployed model


@dataclass(frozen=True)
class MetricSpec:
    """One metric a check reports: the one spelling used by tags, gates, reports and docs.

    Attributes:
        name: the metric's name.
        higher_is_better: its direction; None for a descriptive number (a temperature,
            a sample size) that has no better side. A gate on a descriptive metric needs
            ``better:`` where a direction matters.
        description: a few words for the README's table and the reports.
        unit: ``"fraction"`` (in [0, 1]), ``"count"``, ``"nats"``, ``"ratio"`` or ``""``.
        bounded: the check supplies a confidence interval, so a gate may judge
            ``use: lower | upper``.
        comparable: a paired comparison with the champion on the same test images
            exists (the policy's ``champion:`` section).
        needs_baseline: defined only against an earlier version: the champion, or the
            data the last model was trained on (NaN, and its gates skipped, before one).
    """

    name: str
    higher_is_better: bool | None
    description: str
    unit: str = ""
    bounded: bool = False
    comparable: bool = False
    needs_baseline: bool = False

    @property
    def direction(self) -> str:
        """``"higher"``, ``"lower"`` or ``""`` (descriptive)."""
        if self.higher_is_better is None:
            return ""
        return "higher" if self.higher_is_better else "lower"


def metric(
    name: str,
    higher_is_better: bool | None,
    description: str,
    unit: str = "fraction",
    **flags: bool,
) -> MetricSpec:
    """Shorthand for :class:`MetricSpec` (``unit`` defaults to a fraction in [0, 1])."""
    return MetricSpec(name, higher_is_better, description, unit, **flags)


@dataclass(frozen=True)
class CheckResult:
    """What one check measured.

    Attributes:
        check: the check's name.
        values: every metric the check declares, by name; NaN where it did not apply.
        skipped: metric -> why it does not apply to this model (its gates are skipped).
        bounds: metric -> ``(lower, upper)`` confidence interval at the run's level.
        detail: the check's typed result (a dataclass), for the report's figures.
        section: the JSON-ready section of the TAI report.
    """

    check: str
    values: Mapping[str, float]
    skipped: Mapping[str, str] = field(default_factory=dict)
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    detail: Any = None
    section: Mapping[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for gates and MLflow."""
        return {k: float(v) for k, v in self.values.items()}

    def not_applicable(self) -> dict[str, str]:
        """Metrics that do not apply to this run, with the reason."""
        return dict(self.skipped)


@dataclass(frozen=True)
class Members:
    """The training split, for checks that need it (membership inference).

    Attributes:
        targets: ``(M,)`` class indices of every training image.
        load: ``indices -> (n, C, H, W)`` images in [0, 1]; only the images a check asks
            for are read.
    """

    targets: Tensor
    load: Callable[[Tensor], Tensor]

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class EvalContext:
    """What an evaluation check may use: the deployed model and the held-out split.

    The per-image outputs (``probs``, ``embeddings``) of the whole split are computed once
    and shared; the images themselves are read on demand (:meth:`images`), so a check
    that works on a budget of images never needs the whole split in memory.

    Attributes:
        model: the deployed classifier (temperature-scaled), images in [0, 1], eval mode.
        classes: class names, index-aligned with the model's outputs.
        targets: ``(N,)`` class indices of the held-out split.
        probs: ``(N, K)`` the model's probabilities.
        embeddings: ``(N, D)`` its penultimate-layer embeddings.
        load_images: ``indices -> (n, C, H, W)`` images of the split in [0, 1].
        members: the training split (membership inference), or None.
        champion: the current champion, or None before the first.
        champion_probs: ``(N, K)`` the champion's probabilities on the same images.
        groups: the group of each image (``metadata.csv``), or None.
        group_column: the column ``groups`` came from.
        expected_groups: every group of that column.
        abstention_threshold: the confidence below which the model defers (validation).
        temperature: the temperature the model applies (None when none was fitted).
        confidence: two-sided level of every interval.
        n_resamples: bootstrap resamples of every interval.
        bound_metrics: metrics whose bounds a gate judges (costly bounds only for these).
        seed: the run's seed; each check derives its own generator from it.
    """

    model: nn.Module
    classes: Sequence[str]
    targets: Tensor
    probs: Tensor
    embeddings: Tensor
    load_images: Callable[[Tensor], Tensor]
    members: Members | None = None
    champion: nn.Module | None = None
    champion_probs: Tensor | None = None
    groups: Sequence[str] | None = None
    group_column: str = ""
    expected_groups: Sequence[str] | None = None
    abstention_threshold: float | None = None
    temperature: float | None = None
    confidence: float = 0.95
    n_resamples: int = 1000
    bound_metrics: frozenset[str] = frozenset()
    seed: int = 0

    def __len__(self) -> int:
        return len(self.targets)

    def images(self, index: Tensor) -> Tensor:
        """The split's images at ``index`` (a 1-D tensor of positions)."""
        return self.load_images(index)

    def sample(self, budget: int, generator: torch.Generator) -> Tensor:
        """A seeded random subset of at most ``budget`` positions, in ascending order.

        Split files often come sorted by class, hence random rather than the first ones.
        """
        return sample_indices(len(self), budget, generator)


def sample_indices(n: int, budget: int, generator: torch.Generator) -> Tensor:
    """At most ``budget`` of ``range(n)``, drawn with ``generator``, in ascending order."""
    if n <= budget:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:budget].sort().values


def derive_seed(seed: int, name: str) -> int:
    """A 63-bit seed for ``name`` derived from the run's ``seed``: each check draws from
    its own stream, so adding or reordering checks never changes what another one sees."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def check_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded with :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, name))


@dataclass(frozen=True)
class DeclaredCheck:
    """The declaration of a check whose code runs outside the evaluation loop (the data
    card, drift between data commits, the monitoring of production batches): its name,
    principle, stage and metrics, for the registry."""

    name: str
    principle: Principle
    stage: Stage
    title: str
    metrics: tuple[MetricSpec, ...]

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        return self.metrics

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)


class Check(abc.ABC):
    """A TAI check of the evaluation stage (see the module docstring).

    Subclasses set :attr:`name`, :attr:`principle`, :attr:`title`, implement
    :meth:`metric_specs` (the metrics may depend on the check's options, e.g. the
    corruptions it runs) and :meth:`run`.
    """

    name: ClassVar[str]
    principle: ClassVar[Principle]
    stage: ClassVar[Stage] = Stage.EVALUATION
    title: ClassVar[str] = ""

    @abc.abstractmethod
    def metric_specs(self) -> tuple[MetricSpec, ...]:
        """Every metric :meth:`run` reports."""

    @abc.abstractmethod
    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        """Measure on ``ctx``, drawing every random choice from ``generator``."""

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metric_specs())

    def result(
        self,
        values: Mapping[str, float],
        *,
        skipped: Mapping[str, str] | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        detail: Any = None,
        section: Mapping[str, Any] | None = None,
    ) -> CheckResult:
        """A result holding exactly the declared metrics.

        Raises:
            RuntimeError: ``values`` misses a declared metric or holds an undeclared one
                (a name that drifted: a programming error, caught by the tests).
        """
        declared = set(self.metric_names)
        missing, extra = declared - set(values), set(values) - declared
        if missing or extra:
            raise RuntimeError(
                f"check {self.name!r} reported {sorted(extra)} beyond its declared metrics "
                f"and lacks {sorted(missing)}; declare every metric in metric_specs()"
            )
        return CheckResult(
            self.name,
            {k: float(values[k]) for k in self.metric_names},
            dict(skipped or {}),
            dict(bounds or {}),
            detail,
            dict(section or {}),
        )

    def not_applicable(self, reason: str, section: Mapping[str, Any] | None = None) -> CheckResult:
        """Every metric NaN, skipped for ``reason`` (e.g. ``"certification off"``)."""
        names = self.metric_names
        return self.result(
            dict.fromkeys(names, math.nan),
            skipped=dict.fromkeys(names, reason),
            section=section,
        )
