"""Paired comparisons with the champion, for the policy's ``champion:`` section.

Both models' probabilities on the same test images give, per metric, the difference
``challenger - champion`` with a confidence interval: for accuracy Newcombe's paired
interval with McNemar's exact test (:func:`tai.gates.significance.accuracy_difference`);
for the other per-sample metrics (:data:`~tai.principles.reliability.sample_metrics.SAMPLE_METRICS`)
the paired bootstrap (:func:`tai.gates.significance.paired_bootstrap`). The metric
functions are the ones the report and the bounds use, so a comparison and a reported
value never disagree on what the metric is. Which metrics are comparable is declared by
the checks (``MetricSpec.comparable``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from tai.gates.significance import PairedDifference, accuracy_difference, paired_bootstrap
from tai.principles.reliability.sample_metrics import SAMPLE_METRICS


def champion_comparisons(
    names: Sequence[str],
    champion_probs: Tensor,
    challenger_probs: Tensor,
    targets: Tensor,
    *,
    confidence: float,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, PairedDifference]:
    """Paired ``challenger - champion`` differences on the same test samples.

    Raises:
        ValueError: a name has no per-sample definition, or the two models' outputs do
            not cover the same samples.
    """
    unknown = [n for n in names if n not in SAMPLE_METRICS]
    if unknown:
        raise ValueError(
            f"cannot compare {', '.join(map(repr, unknown))} with the champion; comparable: "
            f"{', '.join(SAMPLE_METRICS)}"
        )
    if champion_probs.shape != challenger_probs.shape:
        raise ValueError(
            f"champion and challenger outputs differ in shape: {tuple(champion_probs.shape)} "
            f"vs {tuple(challenger_probs.shape)}; compare them on the same test split"
        )
    comparisons = {}
    for name in names:
        if name == "accuracy":
            comparisons[name] = accuracy_difference(
                (champion_probs.argmax(1) == targets).numpy(),
                (challenger_probs.argmax(1) == targets).numpy(),
                confidence,
            )
        else:
            comparisons[name] = paired_bootstrap(
                SAMPLE_METRICS[name],
                champion_probs,
                challenger_probs,
                targets,
                n_resamples=n_resamples,
                confidence=confidence,
                seed=seed,
            )
    return comparisons
