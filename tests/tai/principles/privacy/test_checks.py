"""The membership-inference check: its declared metrics, the held-out advantage's bound in
the result at the run's confidence, and a gate on that bound (``use: upper``)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tai.check import EvalContext, Members
from tai.gates.decision import evaluate_gates
from tai.gates.policy import parse_policy
from tai.principles.privacy.checks import MembershipInferenceCheck
from tai.principles.privacy.membership import membership_inference, per_sample_loss

NAMES = ("mia_auc", "mia_advantage", "mia_yeom_advantage", "mia_tpr_at_1pct_fpr")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _context(model: nn.Module, members, outside, confidence: float = 0.95) -> EvalContext:
    (train_x, train_y), (test_x, test_y) = members, outside
    with torch.no_grad():
        probs = model(test_x).softmax(1)
    return EvalContext(
        model=model,
        classes=[str(k) for k in range(probs.shape[1])],
        targets=test_y,
        probs=probs,
        embeddings=torch.zeros(len(test_y), 2),
        load_images=test_x.__getitem__,
        members=Members(train_y, train_x.__getitem__),
        confidence=confidence,
    )


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.fixture(scope="module")
def memorising():
    """A model that memorised 64 random images with random labels."""
    torch.manual_seed(0)
    members, outside = _data(64, 0), _data(64, 1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 4))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(150):
        optimiser.zero_grad()
        F.cross_entropy(model(members[0]), members[1]).backward()
        optimiser.step()
    return model.eval(), members, outside


def test_the_declared_metrics_keep_their_names_and_the_advantage_is_bounded():
    specs = {s.name: s for s in MembershipInferenceCheck().metric_specs()}
    assert tuple(specs) == NAMES
    assert specs["mia_advantage"].bounded
    assert not any(specs[n].bounded for n in NAMES if n != "mia_advantage")
    assert all(specs[n].direction == "lower" for n in NAMES)


def test_the_check_reports_the_held_out_advantage_and_its_bound(memorising):
    model, members, outside = memorising
    ctx = _context(model, members, outside, confidence=0.9)
    generator = torch.Generator().manual_seed(4)
    # Budgets above both sets: the first draw of the generator is the attack's seed.
    seed = int(torch.randint(2**31 - 1, (1,), generator=torch.Generator().manual_seed(4)))
    result = MembershipInferenceCheck(budget=100).run(ctx, generator)

    expected = membership_inference(
        per_sample_loss(model, *members),
        per_sample_loss(model, *outside),
        seed=seed,
        confidence=0.9,
    )
    assert tuple(result.values) == NAMES
    assert result.values["mia_advantage"] == pytest.approx(expected.advantage)
    assert result.values["mia_auc"] == pytest.approx(expected.auc)
    assert result.bounds == {"mia_advantage": pytest.approx(expected.advantage_bounds)}
    lower, upper = result.bounds["mia_advantage"]
    assert lower < result.values["mia_advantage"] < upper
    assert lower > 0.3  # a memorising model leaks, and the bound shows it
    section = result.section["privacy"]
    assert (section["mia_advantage_lower"], section["mia_advantage_upper"]) == (lower, upper)
    assert section["mia_confidence"] == 0.9
    assert section["mia_advantage_in_sample"] >= result.values["mia_advantage"]
    assert not result.not_applicable()


def test_the_bound_follows_the_runs_confidence(memorising):
    model, members, outside = memorising
    widths = []
    for confidence in (0.8, 0.99):
        result = MembershipInferenceCheck().run(
            _context(model, members, outside, confidence), torch.Generator().manual_seed(0)
        )
        lower, upper = result.bounds["mia_advantage"]
        widths.append(upper - lower)
    assert widths[0] < widths[1]


def test_without_training_images_nothing_is_reported_or_bounded(memorising):
    model, _, outside = memorising
    ctx = dataclasses.replace(_context(model, outside, outside), members=None)
    result = MembershipInferenceCheck().run(ctx, torch.Generator().manual_seed(0))
    assert all(math.isnan(v) for v in result.values.values())
    assert set(result.not_applicable()) == set(NAMES)
    assert result.bounds == {}


def test_a_gate_on_the_upper_bound_passes_a_model_that_leaks_nothing_and_fails_one_that_does(
    memorising,
):
    specs = {s.name: s for s in MembershipInferenceCheck().metric_specs()}
    policy = parse_policy(
        "version: 1\nconfidence: 0.95\ngates: [{metric: mia_advantage, max: 0.15, use: upper}]\n",
        specs,
    )
    assert policy.bound_metrics() == ("mia_advantage",)

    def decide(model, members, outside):
        result = MembershipInferenceCheck().run(
            _context(model, members, outside), torch.Generator().manual_seed(0)
        )
        decision = evaluate_gates(policy, result.metrics(), bounds=result.bounds)
        (gate,) = decision.results
        assert gate.value == result.bounds["mia_advantage"][1]  # the upper bound is judged
        return decision.passed

    # An untrained model: members and non-members are alike to it (400 images each).
    untrained = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
    assert decide(untrained, _data(400, 2), _data(400, 3))
    assert not decide(*memorising)
