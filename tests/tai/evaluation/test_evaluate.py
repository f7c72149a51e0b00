import json

import pytest
import torch

from tai.evaluation.evaluate import SCHEMA_VERSION, evaluate_model
from tai.evaluation.inference import predict_logits
from tai.evaluation.registry import CheckOptions, evaluation_checks
from tai.gates.decision import GateDecision, GateResult
from tai.modeling.models import build_model
from tai.modeling.temperature import TemperatureScaledModel
from tai.principles.reliability.temperature import fit_temperature
from tai.report.trust_report import ReportContext, render_trust_report, report_figures

OPTIONS = CheckOptions(corruption_budget=12, ig_steps=4)


@pytest.fixture(scope="module")
def evaluation():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(30, 1, 12, 12, generator=g)
    targets = torch.arange(30) % 3
    raw = build_model("small_cnn", in_channels=1, num_classes=3, seed=0)
    fit = fit_temperature(predict_logits(raw, images[:15]), targets[:15])
    model = TemperatureScaledModel(raw, fit.temperature)
    return (
        evaluate_model(
            model,
            images,
            targets,
            classes=["a", "b", "c"],
            options=OPTIONS,
            temperature=fit.temperature,
        ),
        model,
        images,
        targets,
    )


def test_report_metrics_are_exactly_the_names_the_checks_declare(evaluation):
    result, *_ = evaluation
    declared = [m for c in evaluation_checks(OPTIONS) for m in c.metric_names]
    assert list(result.metrics) == declared


def test_temperature_scaling_is_reported_with_the_unscaled_ece(evaluation):
    result, model, images, targets = evaluation
    assert result.metrics["temperature"] == pytest.approx(float(model.temperature))
    with torch.no_grad():
        raw = model.model(images).softmax(1)
    from tai.principles.reliability.calibration import expected_calibration_error

    assert result.metrics["ece_unscaled"] == pytest.approx(
        expected_calibration_error(raw, targets), abs=1e-6
    )
    assert "temperature" not in result.not_applicable()


def test_accuracy_and_calibration_are_computed_on_the_whole_split(evaluation):
    result, model, images, targets = evaluation
    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert result.metrics["accuracy"] == pytest.approx(
        (logits.argmax(1) == targets).float().mean().item()
    )
    assert result.detail("calibration").n_samples == 30
    assert result.num_samples == 30


def test_one_prototype_per_class_is_explained(evaluation):
    result, model, images, targets = evaluation
    e = result.detail("explanations")
    assert sorted(e.labels) == [0, 1, 2]
    assert [targets[i].item() for i in e.indices] == e.labels
    assert e.attributions.shape == (3, 1, 12, 12)
    assert set(e.method_maps) == {"integrated_gradients", "saliency", "gradcam", "occlusion"}
    assert e.class_mean_maps.shape == (3, 1, 12, 12)
    for c in (0, 1, 2):  # criticisms are samples of their class, distinct from its prototypes
        assert all(targets[i].item() == c for i in e.criticism_indices[c])
        assert not set(e.criticism_indices[c]) & set(e.prototype_indices[c])
    # The insertion AUC is the mean over the quality sample of the AUC of each image's
    # Integrated Gradients map, as the tai functions compute it on the evaluated model.
    from tai.principles.transparency.explain import integrated_gradients
    from tai.principles.transparency.explanation_quality import insertion_auc

    sample = torch.tensor(e.quality_sample.indices)
    x, y = images[sample], targets[sample]
    model.eval()
    maps = integrated_gradients(model, x, y, n_steps=OPTIONS.ig_steps).maps
    expected = insertion_auc(model, x, maps, y).auc.double().mean().item()
    assert result.metrics["insertion_auc"] == pytest.approx(expected, abs=1e-6)
    assert result.metrics["sanity_failures"] == sum(not s["passed"] for s in e.sanity.values())


def test_the_report_is_json_with_a_schema_version_and_lineage(evaluation):
    result, *_ = evaluation
    report = json.loads(json.dumps(result.report({"tai.data.commit": "abc"})))
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["lineage"] == {"tai.data.commit": "abc"}
    assert report["explanations"]["prototype_labels"] == ["a", "b", "c"]
    assert len(report["calibration"]["bins"]["count"]) == 15


def test_a_model_without_embed_is_rejected():
    with pytest.raises(
        ValueError, match="Linear has no `embed\\(x\\)`; build it with tai.modeling.models"
    ):
        evaluate_model(
            torch.nn.Linear(4, 2), torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), classes=["a", "b"]
        )


def test_trust_report_shows_decision_numbers_figures_and_lineage(evaluation):
    result, *_ = evaluation
    decision = GateDecision(
        (GateResult("accuracy", ">=", 0.97, result.metrics["accuracy"], False),)
    )
    ctx = ReportContext(
        model_name="m",
        version="4",
        lineage={"tai.data.commit": "c0ffee"},
        decision=decision,
        promoted=False,
        champion_version="2",
        created="now",
    )
    html = render_trust_report(result, ctx, report_figures(result))
    assert "data card" not in html  # no card given: no data section
    assert "Trust report · m version 4" in html
    assert "1 of 1 gates failed" in html
    assert "<code>champion</code> stays at version 2" in html
    # reliability, robustness, prototypes, prototypes+criticisms, the explanation sheets
    # (one row per class), risk-coverage, adversarial accuracy
    assert html.count("data:image/png;base64,") == 4 + 1 + 2
    assert 'alt="explanation sheets"' in html
    for method in ("integrated_gradients", "saliency", "gradcam", "occlusion"):
        assert f"<tr><td>{method}</td>" in html  # its sanity-check row
    assert "No champion to compare explanations with yet." in html
    assert "c0ffee" in html
    for name in ("gaussian_noise", "jpeg_compression"):
        assert f"<td>{name}</td>" in html


def test_trust_report_shows_the_data_card(evaluation, tmp_path):
    from tai.data.card import build_data_card
    from tests.conftest import write_tiny_dataset

    result, *_ = evaluation
    write_tiny_dataset(tmp_path, counts={"train": 4, "val": 3, "test": 3}, classes=3, size=8)
    card = build_data_card(tmp_path, "tiny", n_components=4, n_factors=2)
    decision = GateDecision((GateResult("accuracy", ">=", 0.0, 1.0, True),))
    ctx = ReportContext("m", "1", {}, decision, True, None, "now", data_card=card)
    html = render_trust_report(result, ctx, report_figures(result))
    assert "training commit's data card" in html
    assert '<td>train</td><td class="num">12</td>' in html
    assert (
        "not estimated (classes &#39;0&#39; (4), &#39;1&#39; (4), &#39;2&#39; (4) have fewer "
        "than 5 training images; confident learning needs at least 5 per class"
    ) in html


def test_without_a_champion_the_comparisons_are_skipped_with_the_reason(evaluation):
    import math

    result, *_ = evaluation
    for name in (
        "corruption_mce",
        "relative_corruption_mce",
        "attribution_stability_spearman",
        "attribution_stability_ssim",
    ):
        assert math.isnan(result.metrics[name])
        assert result.not_applicable()[name] == "no champion to compare with"


def test_the_models_passes_hold_at_most_the_options_batch_size():
    """The probabilities and embeddings of the split (and the champion's) were computed 256
    images a pass whatever the options said: at 224x224 such a pass alone took gigabytes."""
    model = build_model("small_cnn", in_channels=1, num_classes=3, seed=0).eval()
    champion = build_model("small_cnn", in_channels=1, num_classes=3, seed=1).eval()
    passes: list[int] = []
    for net in (model, champion):
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    images, targets = torch.rand(40, 1, 16, 16), torch.arange(40) % 3
    result = evaluate_model(
        model,
        images,
        targets,
        classes=["a", "b", "c"],
        options=CheckOptions(batch_size=8),
        checks=[],
        champion=champion,
    )
    assert result is not None
    assert sum(passes) == 3 * 40 and max(passes) == 8  # probabilities, embeddings, champion
