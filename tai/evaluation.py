"""Model evaluation: every TAI metric on a held-out split, with the same functions the
callbacks use during training, collected into a versioned TAI report.

The report's ``metrics`` section is flat (name -> number): it is what gate policies
refer to, what MLflow logs and what the trust report tabulates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from tai.calibration import CalibrationResult, calibration_report, calibration_summary
from tai.corruptions import DEFAULT_CORRUPTIONS, SEVERITIES
from tai.gate_evidence import FAIRNESS_BOUNDED, champion_comparisons, metric_bounds
from tai.principle_checks import (
    CheckOptions,
    PrincipleResults,
    principle_metric_names,
    run_principle_checks,
)
from tai.robustness import RobustnessResult, corruption_accuracy, corruption_errors
from tai.significance import PairedDifference
from tai.temperature import TemperatureFit
from tai.transparency import (
    TRANSPARENCY_METRICS,
    Explanations,
    attribution_stability,
    explain_model,
)

# Computed when a champion exists to compare with; NaN otherwise.
STABILITY_METRICS = ("attribution_stability_spearman", "attribution_stability_ssim")
CORRUPTION_ERROR_METRICS = ("corruption_mce", "relative_corruption_mce")
CHAMPION_METRICS = (*STABILITY_METRICS, *CORRUPTION_ERROR_METRICS)

SCHEMA_VERSION = "1.0"


def report_metric_names(
    corruptions: Sequence[str] = DEFAULT_CORRUPTIONS,
    epsilons: Sequence[float] = CheckOptions.epsilons,
) -> list[str]:
    """Every name a gate policy may use, for a report over ``corruptions`` and the
    adversarial radii ``epsilons``."""
    names = [
        "accuracy",
        "ece",
        "mce",
        "nll",
        "brier",
        "adaptive_ece",
        "classwise_ece",
        "ece_lower",
        "ece_upper",
        "temperature",
        "ece_unscaled",
        "clean_accuracy",
        "mean_corruption_accuracy",
        *TRANSPARENCY_METRICS,
        *CHAMPION_METRICS,
        *principle_metric_names(epsilons),
    ]
    for c in corruptions:
        names.append(f"{c}_mean")
        names += [f"{c}_s{s}" for s in SEVERITIES]
    return names


@dataclass(frozen=True)
class Evaluation:
    """Everything one evaluation measured; :meth:`report` turns it into the TAI report."""

    classes: list[str]
    num_samples: int
    calibration: CalibrationResult
    robustness: RobustnessResult
    explanations: Explanations
    metrics: dict[str, float] = field(default_factory=dict)
    temperature: TemperatureFit | None = None
    principles: PrincipleResults | None = None
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    comparisons: dict[str, PairedDifference] | None = None

    def not_applicable(self) -> dict[str, str]:
        """Gates on checks that did not apply to this model, with the reason."""
        if self.principles is None:
            return {}
        return self.principles.not_applicable()

    def report(self, lineage: dict[str, str] | None = None) -> dict:
        """The TAI report: JSON-ready, with ``schema_version``."""
        e = self.explanations
        return {
            "schema_version": SCHEMA_VERSION,
            "lineage": dict(lineage or {}),
            "classes": self.classes,
            "num_samples": self.num_samples,
            "metrics": self.metrics,
            "calibration": {
                **self.calibration.as_extended_dict(),
                "bins": asdict(self.calibration.bins),
                "temperature_scaling": self.temperature.as_dict() if self.temperature else None,
            },
            "robustness": {
                "severities": list(self.robustness.severities),
                "clean_accuracy": self.robustness.clean_accuracy,
                "accuracy": self.robustness.accuracy,
            },
            "explanations": {
                "method": "integrated_gradients",
                "prototype_indices": e.indices,
                "prototype_labels": [self.classes[i] for i in e.labels],
                "deletion_auc": e.deletion_auc,
                "convergence_delta": e.convergence_delta,
                "prototypes_per_class": {
                    self.classes[c]: v for c, v in e.prototype_indices.items()
                },
                "criticisms_per_class": {
                    self.classes[c]: v for c, v in e.criticism_indices.items()
                },
                "quality": e.quality,
                "sanity_check": e.sanity,
            },
            **(self.principles.report() if self.principles else {}),
            "statistics": {
                "bounds": {k: list(v) for k, v in self.bounds.items()},
                "champion_comparisons": (
                    {k: v.as_dict() for k, v in self.comparisons.items()}
                    if self.comparisons is not None
                    else None
                ),
            },
        }


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """Logits of ``images`` in batches (memory bounded), model in eval mode."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def model_embeddings(model: nn.Module, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """Penultimate-layer embeddings (``model.embed``) of ``images`` in batches, eval mode."""
    model.eval()
    return torch.cat(
        [model.embed(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )


def evaluate_model(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    *,
    classes: list[str],
    corruptions: Sequence[str] = DEFAULT_CORRUPTIONS,
    robustness_budget: int = 1000,
    prototypes_per_class: int = 1,
    n_bins: int = 15,
    ig_steps: int = 32,
    temperature: TemperatureFit | None = None,
    reference_model: nn.Module | None = None,
    reference_robustness: RobustnessResult | None = None,
    members: tuple[Tensor, Tensor] | None = None,
    groups: Sequence[str] | None = None,
    group_column: str = "",
    expected_groups: Sequence[str] | None = None,
    abstention_threshold: float | None = None,
    checks: CheckOptions | None = None,
    bound_metrics: Sequence[str] = (),
    comparison_metrics: Sequence[str] = (),
    embeddings: Tensor | None = None,
    seed: int = 0,
) -> Evaluation:
    """Run every TAI check on a held-out split.

    Args:
        model: a classifier taking images in [0, 1] with an ``embed`` method.
        images: (N, C, H, W) in [0, 1].
        targets: (N,) class indices.
        classes: class names, index-aligned with the logits.
        corruptions: corruptions for the robustness check.
        robustness_budget: a seeded random subset of this many images goes through the
            corruption suite.
        prototypes_per_class: prototypes explained per class.
        n_bins: calibration bins.
        ig_steps: Integrated Gradients steps.
        temperature: the temperature fitted on validation when ``model`` is a
            :class:`tai.temperature.TemperatureScaledModel`; its metrics then also
            report the test ECE of the unscaled logits.
        reference_model: the current champion; when given, the stability of the
            explanations (same prototypes, both models) is measured.
        reference_robustness: the champion's robustness result; when given, the
            corruption errors CE and mCE (Hendrycks & Dietterich, 2019) against it.
        members: training images and targets; when given, the fairness, privacy,
            selective-prediction and adversarial checks run
            (:func:`tai.principle_checks.run_principle_checks`).
        groups: the group of each test image, for fairness by group.
        group_column: the ``metadata.csv`` column ``groups`` came from.
        expected_groups: every group of that column; one without test images is an error.
        abstention_threshold: confidence threshold fitted on validation.
        checks: budgets and switches of those checks; ``checks.confidence`` is also the
            level of ``bound_metrics`` and ``comparison_metrics``.
        bound_metrics: metrics whose confidence bounds a gate judges.
        comparison_metrics: metrics compared with ``reference_model`` on the same
            test images (paired); requires ``reference_model``.
        embeddings: the model's penultimate-layer embeddings of ``images`` (e.g. from a
            cache keyed by model and data version); computed when None.
        seed: seeds corruptions, prototype selection, bootstraps and attacks.
    """
    if not callable(getattr(model, "embed", None)):
        raise ValueError(f"{type(model).__name__} has no `embed(x)`; build it with tai.models")
    model.eval()
    logits = predict_logits(model, images)
    calibration = calibration_report(logits.softmax(1), targets, n_bins=n_bins, seed=seed)
    # A seeded random subset: split files often come sorted by class.
    generator = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(targets), generator=generator)[:robustness_budget]
    robustness = corruption_accuracy(
        model, images[subset], targets[subset], corruptions=corruptions, seed=seed
    )
    if embeddings is None:
        embeddings = model_embeddings(model, images)
    elif embeddings.shape[0] != len(images):
        raise ValueError(
            f"`embeddings` has {embeddings.shape[0]} rows for {len(images)} images; pass the "
            "model's embeddings of exactly these images, or None to compute them"
        )
    explanations = explain_model(
        model,
        images,
        targets,
        embeddings,
        n_prototypes=prototypes_per_class,
        n_steps=ig_steps,
        seed=seed,
    )
    checks = checks or CheckOptions()
    probs = logits.softmax(1)
    principles = None
    if members is not None:
        principles = run_principle_checks(
            model,
            images,
            targets,
            probs,
            embeddings,
            classes=classes,
            members=members,
            groups=groups,
            group_column=group_column,
            expected_groups=expected_groups,
            abstention_threshold=abstention_threshold,
            options=checks,
            seed=seed,
        )
    principle_metrics = (
        principles.metrics()
        if principles
        else dict.fromkeys(principle_metric_names(checks.epsilons), float("nan"))
    )
    fairness_bounds = {
        name: (principle_metrics[f"{name}_lower"], principle_metrics[f"{name}_upper"])
        for name in FAIRNESS_BOUNDED
    }
    bounds = metric_bounds(
        bound_metrics,
        probs,
        targets,
        confidence=checks.confidence,
        fairness_bounds=fairness_bounds,
        n_resamples=checks.n_resamples,
        seed=seed,
    )
    comparisons = None
    if reference_model is not None:
        comparisons = champion_comparisons(
            comparison_metrics,
            predict_logits(reference_model, images).softmax(1),
            probs,
            targets,
            confidence=checks.confidence,
            n_resamples=checks.n_resamples,
            seed=seed,
        )
    scaling = {}
    if temperature is not None:
        unscaled = (logits * temperature.temperature).softmax(1)
        scaling = {
            "temperature": temperature.temperature,
            "ece_unscaled": calibration_summary(unscaled, targets, n_bins=n_bins).ece,
        }
    metrics = {
        "accuracy": calibration.accuracy,
        **calibration.as_extended_dict(),
        **scaling,
        **{k: v for k, v in robustness.as_dict().items()},
        **explanations.quality,
        **principle_metrics,
        **dict.fromkeys(CHAMPION_METRICS, float("nan")),
        **_corruption_errors(robustness, reference_robustness),
        **(
            attribution_stability(
                reference_model,
                model,
                explanations.images,
                torch.tensor(explanations.labels),
                n_steps=ig_steps,
            )
            if reference_model is not None
            else {}
        ),
    }
    return Evaluation(
        classes=classes,
        num_samples=len(targets),
        calibration=calibration,
        robustness=robustness,
        explanations=explanations,
        metrics={k: float(v) for k, v in metrics.items()},
        temperature=temperature,
        principles=principles,
        bounds=bounds,
        comparisons=comparisons,
    )


def _corruption_errors(
    result: RobustnessResult, baseline: RobustnessResult | None
) -> dict[str, float]:
    """mCE and relative mCE against the champion; NaN where they are undefined (the
    champion made no error on a corruption, or was measured on other cells)."""
    if baseline is None:
        return {}
    try:
        errors = corruption_errors(result, baseline)
    except ValueError:
        return {}
    return {"corruption_mce": errors.mce, "relative_corruption_mce": errors.relative_mce}
