"""Model evaluation: every registered check on a held-out split, as one TAI report.

:func:`run_checks` is the loop: each check of the registry runs on the same
:class:`~tai.check.EvalContext` with its own generator (derived from the run's seed and
the check's name), and its :class:`~tai.check.CheckResult` is kept by name.
:func:`evaluate_model` builds the context from a model and a split in memory.

The report's ``metrics`` section is flat (name -> number): it is what gate policies
refer to, what MLflow logs and what the trust report tabulates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from tai.check import Check, CheckResult, EvalContext, Members, check_generator
from tai.evaluation.inference import model_embeddings, predict_logits
from tai.evaluation.registry import CheckOptions, evaluation_checks

SCHEMA_VERSION = "2.0"


@dataclass(frozen=True)
class Evaluation:
    """Everything one evaluation measured, by check.

    Attributes:
        classes: class names, index-aligned with the outputs.
        targets: ``(N,)`` class indices of the evaluated split.
        probs: ``(N, K)`` the model's probabilities.
        champion_probs: ``(N, K)`` the champion's, on the same images (or None).
        results: check name -> its result, in the order the checks ran.
        confidence: the level of every interval.
    """

    classes: list[str]
    targets: Tensor
    probs: Tensor
    results: Mapping[str, CheckResult]
    champion_probs: Tensor | None = None
    confidence: float = 0.95

    @property
    def num_samples(self) -> int:
        return len(self.targets)

    @property
    def metrics(self) -> dict[str, float]:
        """Every check's metrics, flat."""
        return {k: v for r in self.results.values() for k, v in r.metrics().items()}

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """Confidence intervals the checks computed, by metric."""
        return {k: v for r in self.results.values() for k, v in r.bounds.items()}

    def not_applicable(self) -> dict[str, str]:
        """Metrics that do not apply to this model, with the reason (their gates skip)."""
        return {k: v for r in self.results.values() for k, v in r.not_applicable().items()}

    def detail(self, check: str) -> Any:
        """The typed result of one check (None when it did not run)."""
        result = self.results.get(check)
        return None if result is None else result.detail

    def report(self, lineage: Mapping[str, str] | None = None) -> dict:
        """The TAI report: JSON-ready, with ``schema_version``."""
        sections: dict[str, Any] = {}
        for result in self.results.values():
            for key, value in result.section.items():
                if isinstance(value, Mapping) and isinstance(sections.get(key), dict):
                    sections[key].update(value)
                else:
                    sections[key] = dict(value) if isinstance(value, Mapping) else value
        return {
            "schema_version": SCHEMA_VERSION,
            "lineage": dict(lineage or {}),
            "classes": self.classes,
            "num_samples": self.num_samples,
            "metrics": self.metrics,
            "not_applicable": self.not_applicable(),
            **sections,
            "statistics": {
                "confidence": self.confidence,
                "bounds": {k: list(v) for k, v in self.bounds.items()},
            },
        }


Observer = Callable[[str, int, int], AbstractContextManager[object]]


def run_checks(
    checks: Sequence[Check], ctx: EvalContext, *, observe: Observer | None = None
) -> Evaluation:
    """Run each check on ``ctx`` with its own generator (seeded from the run's seed and the
    check's name, so adding a check never changes what another one sees).

    Args:
        checks: the checks, run in this order.
        ctx: what they measure.
        observe: ``observe(name, index, total)`` gives a context manager entered around
            each check (a progress display, a timer); none by default.
    """
    names = [c.name for c in checks]
    if len(set(names)) != len(names):
        raise ValueError(f"two checks share a name in {names}; names identify results")
    results = {}
    for index, check in enumerate(checks):
        with observe(check.name, index, len(checks)) if observe else nullcontext():
            results[check.name] = check.run(ctx, check_generator(ctx.seed, check.name))
    return Evaluation(
        classes=list(ctx.classes),
        targets=ctx.targets,
        probs=ctx.probs,
        results=results,
        champion_probs=ctx.champion_probs,
        confidence=ctx.confidence,
    )


def evaluate_model(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    *,
    classes: Sequence[str],
    options: CheckOptions | None = None,
    checks: Sequence[Check] | None = None,
    members: tuple[Tensor, Tensor] | None = None,
    champion: nn.Module | None = None,
    groups: Sequence[str] | None = None,
    group_column: str = "",
    expected_groups: Sequence[str] | None = None,
    abstention_threshold: float | None = None,
    temperature: float | None = None,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    bound_metrics: Sequence[str] = (),
    embeddings: Tensor | None = None,
    seed: int = 0,
    observe: Observer | None = None,
) -> Evaluation:
    """Run every registered check on a held-out split held in memory.

    Args:
        model: a classifier taking images in [0, 1] with an ``embed`` method, eval mode.
        images: ``(N, C, H, W)`` in [0, 1].
        targets: ``(N,)`` class indices.
        classes: class names, index-aligned with the logits.
        options: budgets and switches of the registry's checks.
        checks: the checks to run (default: :func:`evaluation_checks` of ``options``).
        members: training images and targets (membership inference).
        champion: the current champion; its probabilities on the same images are kept
            for paired comparisons, and the checks compare with it where they can.
        groups: the group of each image, for fairness by group.
        group_column: the ``metadata.csv`` column ``groups`` came from.
        expected_groups: every group of that column; one without images is an error.
        abstention_threshold: confidence threshold fitted on validation.
        temperature: the temperature ``model`` applies (fitted on validation).
        confidence: two-sided level of every interval.
        n_resamples: bootstrap resamples of every interval.
        bound_metrics: metrics whose bounds a gate judges.
        embeddings: the model's embeddings of ``images`` (e.g. from a cache).
        seed: the run's seed.
        observe: wraps each check (see :func:`run_checks`).

    Raises:
        ValueError: the model has no ``embed``, or ``embeddings`` do not match ``images``.
    """
    if not callable(getattr(model, "embed", None)):
        raise ValueError(
            f"{type(model).__name__} has no `embed(x)`; build it with tai.modeling.models"
        )
    model.eval()
    batch = (options or CheckOptions()).batch_size  # images a pass of the model
    if embeddings is None:
        embeddings = model_embeddings(model, images, batch_size=batch)
    elif embeddings.shape[0] != len(images):
        raise ValueError(
            f"`embeddings` has {embeddings.shape[0]} rows for {len(images)} images; pass the "
            "model's embeddings of exactly these images, or None to compute them"
        )
    champion_probs = None
    if champion is not None:
        champion.eval()
        champion_probs = predict_logits(champion, images, batch_size=batch).softmax(1)
    ctx = EvalContext(
        model=model,
        classes=list(classes),
        targets=targets,
        probs=predict_logits(model, images, batch_size=batch).softmax(1),
        embeddings=embeddings,
        load_images=images.__getitem__,
        members=None if members is None else Members(members[1], members[0].__getitem__),
        champion=champion,
        champion_probs=champion_probs,
        groups=groups,
        group_column=group_column,
        expected_groups=expected_groups,
        abstention_threshold=abstention_threshold,
        temperature=temperature,
        confidence=confidence,
        n_resamples=n_resamples,
        bound_metrics=frozenset(bound_metrics),
        seed=seed,
    )
    return run_checks(
        checks if checks is not None else evaluation_checks(options), ctx, observe=observe
    )
