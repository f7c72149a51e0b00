"""The registry's checks inside the evaluation: every principle's metrics, their bounds,
the per-check generators, and the champion comparisons (tai.gates.evidence)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tai.check import check_generator
from tai.evaluation.evaluate import evaluate_model
from tai.evaluation.inference import predict_logits
from tai.evaluation.registry import CheckOptions, evaluation_checks
from tai.gates.evidence import champion_comparisons
from tai.gates.significance import proportion_interval
from tai.modeling.models import build_model
from tai.principles.autonomy.selective import risk_coverage
from tai.principles.fairness.per_class import class_fairness
from tai.principles.privacy.membership import membership_inference, per_sample_loss
from tai.principles.reliability.sample_metrics import SAMPLE_METRICS, bootstrap_interval


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 12, 12, generator=g) * 0.8
    targets = torch.arange(n) % 3
    for k in range(3):
        images[targets == k, :, 4 * k : 4 * k + 4, :] += 0.25
    return images.clamp(0, 1), targets


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    images, targets = _data(90, 0)
    model = build_model("small_cnn", in_channels=1, num_classes=3, seed=0)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(15):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(images), targets).backward()
        optimiser.step()
    return model.eval(), images, targets


OPTIONS = CheckOptions(
    corruption_budget=12, ig_steps=4, epsilons=(0.05,), pgd_steps=3, adversarial_budget=20
)


@pytest.fixture(scope="module")
def evaluation(trained):
    model, train_images, train_targets = trained
    images, targets = _data(60, 1)
    groups = ["left" if i % 2 else "right" for i in range(60)]
    result = evaluate_model(
        model,
        images,
        targets,
        classes=["a", "b", "c"],
        options=OPTIONS,
        members=(train_images, train_targets),
        groups=groups,
        group_column="hand",
        abstention_threshold=0.5,
        n_resamples=200,
        bound_metrics=("accuracy", "ece", "worst_class_accuracy", "nll"),
        champion=build_model("small_cnn", in_channels=1, num_classes=3, seed=1).eval(),
    )
    return result, model, images, targets, groups


def _first_seed(check: str, seed: int = 0) -> int:
    """The seed a check draws first from its own generator (as the checks do)."""
    return int(torch.randint(2**31 - 1, (1,), generator=check_generator(seed, check)))


def test_every_principle_metric_is_reported(evaluation):
    result, *_ = evaluation
    declared = [m for c in evaluation_checks(OPTIONS) for m in c.metric_names]
    assert list(result.metrics) == declared
    # No temperature was fitted here: its two metrics are NaN, skipped with the reason.
    for name in ("temperature", "ece_unscaled"):
        assert math.isnan(result.metrics[name])
        assert result.not_applicable()[name] == "no temperature was fitted"
    for name in ("worst_class_accuracy", "mia_advantage", "aurc", "pgd_mean_accuracy"):
        assert math.isfinite(result.metrics[name]), name
    # Certification is off by default: NaN, and its gates are skipped with the reason.
    assert math.isnan(result.metrics["certified_accuracy_r0p25"])
    assert result.not_applicable()["certified_accuracy_r0p25"] == "certification off (TAI_CERTIFY)"


def test_principle_metrics_equal_the_functions_they_wrap(evaluation):
    result, model, images, targets, _ = evaluation
    probs = predict_logits(model, images).softmax(1)
    fairness = class_fairness(
        probs, targets, classes=["a", "b", "c"], n_resamples=200, seed=_first_seed("class_fairness")
    )
    assert result.metrics["worst_class_accuracy"] == pytest.approx(fairness.worst_class_accuracy)
    assert result.metrics["worst_class_accuracy_lower"] == pytest.approx(
        fairness.worst_class_accuracy_lower
    )
    assert result.metrics["aurc"] == pytest.approx(risk_coverage(probs, targets).aurc)
    confident = probs.max(1).values >= 0.5
    assert result.metrics["coverage_at_threshold"] == pytest.approx(float(confident.float().mean()))


def test_group_fairness_uses_the_group_column(evaluation):
    result, model, images, targets, groups = evaluation
    probs = predict_logits(model, images).softmax(1)
    correct = (probs.argmax(1) == targets).numpy()
    per_group = [correct[np.array(groups) == g].mean() for g in ("left", "right")]
    assert result.metrics["worst_group_accuracy"] == pytest.approx(min(per_group))
    assert result.metrics["group_error_rate_gap"] == pytest.approx(abs(per_group[0] - per_group[1]))
    section = result.report()["fairness"]["groups"]
    assert section["column"] == "hand" and sorted(section["group"]) == ["left", "right"]


def test_bounds_are_at_the_requested_confidence(evaluation):
    result, model, images, targets, _ = evaluation
    probs = predict_logits(model, images).softmax(1)
    correct = int((probs.argmax(1) == targets).sum())
    wilson = proportion_interval(correct, len(targets), 0.95, method="wilson")
    assert result.bounds["accuracy"] == pytest.approx((wilson.lower, wilson.upper))
    # The report's own ECE bootstrap (with 1000 resamples, the report's ece_lower/upper).
    from tai.principles.reliability.calibration import ece_confidence_interval

    _, lower, upper = ece_confidence_interval(
        probs, targets, n_boot=200, level=0.95, seed=_first_seed("calibration")
    )
    assert result.bounds["ece"] == pytest.approx((lower, upper))
    assert result.bounds["worst_class_accuracy"] == (
        result.metrics["worst_class_accuracy_lower"],
        result.metrics["worst_class_accuracy_upper"],
    )


def test_champion_comparisons_are_paired_on_the_same_images(evaluation):
    result, _, images, targets, _ = evaluation
    champion = build_model("small_cnn", in_channels=1, num_classes=3, seed=1).eval()
    assert torch.allclose(result.champion_probs, predict_logits(champion, images).softmax(1))
    comparisons = champion_comparisons(
        ["accuracy", "nll"], result.champion_probs, result.probs, targets, confidence=0.95
    )
    accuracy = comparisons["accuracy"]
    assert accuracy.diff == pytest.approx(accuracy.value_b - accuracy.value_a)
    assert accuracy.value_b == pytest.approx(result.metrics["accuracy"])
    assert accuracy.lower <= accuracy.diff <= accuracy.upper
    assert not math.isnan(accuracy.p_value)
    assert comparisons["nll"].value_b == pytest.approx(result.metrics["nll"], rel=1e-9)
    report = json.loads(json.dumps(result.report()))
    assert set(report["statistics"]["bounds"]) == {
        "accuracy",
        "ece",
        "nll",
        "worst_class_accuracy",
        "class_accuracy_gap",
        "worst_group_accuracy",
        "group_error_rate_gap",
        "deletion_auc",
        "insertion_auc",
        "infidelity",
        "sensitivity",
        "sanity_integrated_gradients_correlation",
        "sanity_saliency_correlation",
        "sanity_gradcam_correlation",
        "sanity_occlusion_correlation",
        "mia_advantage",
    }


def test_membership_inference_uses_the_training_images_as_members(evaluation, trained):
    result, model, images, targets, _ = evaluation
    _, train_images, train_targets = trained
    expected = membership_inference(
        per_sample_loss(model, train_images, train_targets),
        per_sample_loss(model, images, targets),
        seed=_first_seed("membership_inference"),
    )
    # Same members and non-members (budgets exceed both sets), same balancing seed.
    assert result.metrics["mia_auc"] == pytest.approx(expected.auc)


def test_adversarial_curves_are_in_the_report(evaluation):
    result, *_ = evaluation
    sections = {s["attack"]: s for s in result.report()["adversarial"]}
    assert set(sections) == {"pgd", "fgsm"}
    pgd = sections["pgd"]
    assert pgd["epsilons"] == [0.05]
    assert pgd["accuracy"][0] <= pgd["clean_accuracy"]
    assert result.metrics["pgd_accuracy_eps_0p05"] == pgd["accuracy"][0]


def test_no_epsilons_switch_the_attacks_off():
    names = [m for c in evaluation_checks(CheckOptions(epsilons=())) for m in c.metric_names]
    assert not any(n.startswith(("pgd_", "fgsm_")) for n in names)
    with_attacks = evaluation_checks(CheckOptions(epsilons=(0.1,)))
    assert "pgd_accuracy_eps_0p1" in [m for c in with_attacks for m in c.metric_names]


def test_bootstrap_interval_matches_scipy():
    from scipy.stats import bootstrap

    g = torch.Generator().manual_seed(0)
    probs = torch.rand(80, 3, generator=g).softmax(1)
    targets = torch.randint(0, 3, (80,), generator=g)
    nll = SAMPLE_METRICS["nll"]
    ours = bootstrap_interval(
        nll, probs, targets, n_resamples=2000, generator=torch.Generator().manual_seed(0)
    )
    reference = bootstrap(
        (np.arange(80),),
        lambda idx: nll(probs[torch.as_tensor(idx)], targets[torch.as_tensor(idx)]),
        n_resamples=2000,
        method="percentile",
        vectorized=False,
        random_state=0,
    ).confidence_interval
    assert ours == pytest.approx((reference.low, reference.high), abs=0.03)


def test_an_unknown_comparison_is_refused():
    probs = torch.full((4, 2), 0.5)
    targets = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"cannot compare 'mia_auc' with the champion"):
        champion_comparisons(["mia_auc"], probs, probs, targets, confidence=0.95)
    with pytest.raises(ValueError, match="differ in shape"):
        champion_comparisons(["accuracy"], probs, probs[:3], targets, confidence=0.95)


def test_a_group_without_test_samples_is_a_clear_error(trained):
    model, train_images, train_targets = trained
    images, targets = _data(12, 2)
    with pytest.raises(ValueError, match="night"):
        evaluate_model(
            model,
            images,
            targets,
            classes=["a", "b", "c"],
            options=CheckOptions(corruption_budget=8, ig_steps=2, epsilons=()),
            members=(train_images, train_targets),
            groups=["day"] * 12,
            group_column="light",
            expected_groups=["day", "night"],
            n_resamples=50,
        )


def test_trust_report_has_a_section_per_principle_and_the_eu_ai_act_map(evaluation):
    from tai.gates.decision import GateDecision, GateResult
    from tai.report.trust_report import ReportContext, render_trust_report, report_figures

    result, _, _, targets, _ = evaluation
    decision = GateDecision(
        (GateResult("mia_advantage", "<=", 0.2, result.metrics["mia_advantage"], True),)
    )
    ctx = ReportContext(
        model_name="m",
        version="3",
        lineage={"tai.data.commit": "c0ffee"},
        decision=decision,
        promoted=True,
        champion_version=None,
        created="now",
        version_tags={"tai.weights_sha256": "ab" * 32},
        approval={"state": "approved", "reviewer": "alice", "reason": "", "decided_at": "t"},
        comparisons=champion_comparisons(
            ["accuracy"], result.champion_probs, result.probs, targets, confidence=0.95
        ),
    )
    figures = report_figures(result)
    assert {"risk_coverage", "adversarial"} <= set(figures)
    html = render_trust_report(result, ctx, figures)
    for section in ("reliability", "transparency", "fairness", "privacy", "autonomy", "security"):
        assert f'<section id="{section}">' in html, section
    assert '<section id="eu-ai-act">' in html and "Art. 14(4)(e)" in html
    assert "Groups (hand)" in html
    assert "approved by alice" in html
    assert "ab" * 32 in html
    assert "Against the champion (paired, same test images)" in html
    assert "Certified robustness (randomized smoothing) is off" in html
