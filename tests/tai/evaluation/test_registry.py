"""The registry of checks is the one source of metric names: every place that names a
metric (results, the EU AI Act map, the default policy, the README, the report template)
agrees with it, and each check draws from its own generator."""

from __future__ import annotations

import math
import re

import pytest
import torch

from tai.check import (
    Check,
    CheckResult,
    EvalContext,
    MetricSpec,
    Principle,
    check_generator,
    derive_seed,
    metric,
)
from tai.evaluation.evaluate import evaluate_model, run_checks
from tai.evaluation.registry import (
    CheckOptions,
    all_checks,
    evaluation_checks,
    metric_specs,
)
from tai.gates.eu_ai_act import REQUIREMENTS
from tai.gates.policy import load_policy
from tai.modeling.models import build_model
from tai.principles.reliability.checks import CalibrationCheck, CorruptionCheck
from tai.principles.reliability.sample_metrics import SAMPLE_METRICS
from tai.report.metric_table import metrics_markdown
from tests.conftest import REPO_ROOT

EVERYTHING_ON = CheckOptions(
    corruptions=("gaussian_noise", "contrast"),
    corruption_budget=12,
    ig_steps=2,
    epsilons=(0.05,),
    pgd_steps=2,
    adversarial_budget=8,
    certify=True,
    certify_n0=4,
    certify_n=8,
    certify_budget=4,
    membership_budget=20,
)


@pytest.fixture(scope="module")
def evaluation():
    g = torch.Generator().manual_seed(0)
    images, targets = torch.rand(30, 1, 12, 12, generator=g), torch.arange(30) % 3
    model = build_model("small_cnn", in_channels=1, num_classes=3, seed=0).eval()
    champion = build_model("small_cnn", in_channels=1, num_classes=3, seed=1).eval()
    return evaluate_model(
        model,
        images,
        targets,
        classes=["a", "b", "c"],
        options=EVERYTHING_ON,
        members=(images, targets),
        champion=champion,
        groups=["x", "y"] * 15,
        group_column="site",
        abstention_threshold=0.4,
        temperature=1.2,
        n_resamples=50,
    )


def test_the_results_report_exactly_the_declared_metrics(evaluation):
    declared = [m for c in evaluation_checks(EVERYTHING_ON) for m in c.metric_names]
    assert list(evaluation.metrics) == declared
    assert set(evaluation.results) == {c.name for c in evaluation_checks(EVERYTHING_ON)}
    # With every check switched on and a champion given, nothing is skipped but the
    # corruption errors, which a random champion may leave undefined (it is not degraded).
    assert set(evaluation.not_applicable()) <= {"corruption_mce", "relative_corruption_mce"}


def test_no_metric_name_is_declared_twice_and_a_duplicate_is_refused():
    specs = metric_specs(EVERYTHING_ON)
    assert len(specs) == sum(len(c.metric_names) for c in all_checks(EVERYTHING_ON))

    class Twin(CalibrationCheck):
        name = "twin"

    with pytest.raises(RuntimeError, match="'accuracy' is declared by both 'calibration' and"):
        metric_specs(CheckOptions(extra=(Twin(),)))


def test_every_metric_has_a_direction_or_is_marked_descriptive_and_a_description():
    units = {"fraction", "count", "nats", "ratio", ""}
    for spec in metric_specs().values():
        assert spec.higher_is_better in (True, False, None), spec.name
        assert spec.description and not spec.description.endswith("."), spec.name
        assert spec.unit in units, spec.name


def test_the_comparable_metrics_are_exactly_those_with_a_per_sample_definition():
    comparable = {n for n, s in metric_specs().items() if s.comparable}
    assert comparable == set(SAMPLE_METRICS)


def test_a_check_that_reports_an_undeclared_metric_is_a_programming_error():
    class Drifted(Check):
        name = "drifted"
        principle = Principle.RELIABILITY

        def metric_specs(self) -> tuple[MetricSpec, ...]:
            return (metric("accuracy", True, "top-1 accuracy"),)

        def run(self, ctx, generator) -> CheckResult:
            return self.result({"acuracy": 1.0})

    with pytest.raises(
        RuntimeError, match=r"reported \['acuracy'\] beyond .* lacks \['accuracy'\]"
    ):
        Drifted().run(None, None)


# -------------------------------------------------------------- every place that names one


def test_the_eu_ai_act_map_names_only_registered_metrics():
    specs = metric_specs()
    named = {
        e.partition(":")[2] for r in REQUIREMENTS for e in r.evidence if e.startswith("metric:")
    }
    assert named and named <= set(specs)


def test_the_default_policy_names_only_registered_metrics():
    policy = load_policy(
        REPO_ROOT / "tai-policy.yaml", metric_specs(), monitoring_specs=metric_specs()
    )
    assert {g.metric for g in policy.gates} <= set(metric_specs())


def test_the_readme_metric_table_is_the_registry():
    readme = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"<!-- metrics:begin -->\n(.*?)\n<!-- metrics:end -->", readme, re.S)
    assert block, "README.md lacks the <!-- metrics:begin --> ... <!-- metrics:end --> block"
    assert block.group(1) == metrics_markdown(), (
        "the README's metric table is out of date: paste `tai metrics --markdown` into it"
    )


def test_the_report_template_names_only_registered_metrics():
    template = (REPO_ROOT / "tai/report/templates/trust_report.html.j2").read_text()
    named = set(re.findall(r"\bmetrics\.([a-z_0-9]+)", template))
    assert named, "the template names no metric: the pattern is wrong"
    assert named <= set(metric_specs())


# ------------------------------------------------------------------- independent generators


class _Greedy(Check):
    """A check that draws many numbers from its generator and reports none."""

    name = "greedy"
    principle = Principle.RELIABILITY

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        return ()

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        torch.rand(10_000, generator=generator)
        return self.result({})


def _context(seed: int = 0) -> EvalContext:
    g = torch.Generator().manual_seed(3)
    images, targets = torch.rand(40, 1, 8, 8, generator=g), torch.arange(40) % 2
    model = build_model("small_cnn", in_channels=1, num_classes=2, seed=0).eval()
    with torch.no_grad():
        probs = model(images).softmax(1)
    return EvalContext(
        model=model,
        classes=["a", "b"],
        targets=targets,
        probs=probs,
        embeddings=torch.zeros(40, 2),
        load_images=images.__getitem__,
        n_resamples=100,
        seed=seed,
    )


def test_adding_a_check_that_draws_first_changes_nothing_another_check_sees():
    checks = [CalibrationCheck(), CorruptionCheck(["gaussian_noise"], [3], budget=10)]
    alone = run_checks(checks, _context()).metrics
    with_greedy = run_checks([_Greedy(), *checks], _context()).metrics
    assert alone == with_greedy
    # ...while the sample really depends on the seed, so the equality above says something.
    other = run_checks(checks, _context(seed=1)).metrics
    assert (
        other["ece_upper"] != alone["ece_upper"]
        or other["gaussian_noise_s3"] != alone["gaussian_noise_s3"]
    )


def test_each_check_gets_its_own_seed_from_the_run_seed_and_its_name():
    assert derive_seed(0, "calibration") != derive_seed(0, "corruptions")
    assert derive_seed(0, "calibration") != derive_seed(1, "calibration")
    assert derive_seed(0, "calibration") == derive_seed(0, "calibration") < 2**63
    a = torch.rand(3, generator=check_generator(7, "x"))
    assert torch.equal(a, torch.rand(3, generator=check_generator(7, "x")))


def test_a_check_that_cannot_apply_reports_nan_with_the_reason(evaluation):
    ctx = _context()
    result = evaluation_checks(CheckOptions())[-1].run(ctx, check_generator(0, "x"))
    assert result.check == "certification"
    assert all(math.isnan(v) for v in result.values.values())
    assert set(result.not_applicable().values()) == {"certification off (TAI_CERTIFY)"}
