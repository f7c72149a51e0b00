"""Loss-threshold membership inference against hand-computed cases, scikit-learn, scipy's
Mann-Whitney U, a brute-force threshold sweep, and two model behaviours: memorising and
generalising."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score
from torch import nn

from tai.principles.privacy.membership import (
    MembershipInference,
    membership_inference,
    per_sample_loss,
)

MEMBERS = [0.1, 0.2, 0.3]
NONMEMBERS = [0.25, 0.5, 0.9]


@pytest.fixture(autouse=True)
def _one_thread():
    """Two threads on a shared, busy machine run these small tensors several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _sweep(members: np.ndarray, nonmembers: np.ndarray):
    """(TPR, FPR) of "member when loss <= t" for every loss value t, and t = -inf."""
    thresholds = np.concatenate([[-np.inf], np.unique(np.concatenate([members, nonmembers]))])
    tpr = np.array([(members <= t).mean() for t in thresholds])
    fpr = np.array([(nonmembers <= t).mean() for t in thresholds])
    return tpr, fpr


# --------------------------------------------------------------------- hand-computed cases


def test_hand_computed_auc_advantage_and_low_fpr_tpr():
    # Pairs (member, non-member) with a lower member loss: 3 + 3 + 2 of 9.
    # loss <= 0.2: TPR 2/3, FPR 0; loss <= 0.3: TPR 1, FPR 1/3; Yeom's tau = 0.2.
    result = membership_inference(MEMBERS, NONMEMBERS)
    assert result.auc == pytest.approx(8 / 9, abs=1e-12)
    assert result.advantage == pytest.approx(2 / 3, abs=1e-12)
    assert result.yeom_advantage == pytest.approx(2 / 3, abs=1e-12)
    assert result.tpr_at_1pct_fpr == pytest.approx(2 / 3, abs=1e-12)
    assert result.threshold == pytest.approx(0.2)
    assert (result.n_members, result.n_nonmembers) == (3, 3)


def test_yeom_threshold_can_be_worse_than_the_best_threshold():
    # tau = mean member loss = 0.4: TPR 2/3 (0.0, 0.1 <= 0.4), FPR 2/3 (0.2, 0.3) -> 0.
    # Best: loss <= 0.1 gives TPR 2/3, FPR 0 -> 2/3.
    result = membership_inference([0.0, 0.1, 1.1], [0.2, 0.3, 2.0])
    assert result.yeom_advantage == pytest.approx(0.0, abs=1e-12)
    assert result.advantage == pytest.approx(2 / 3, abs=1e-12)
    assert result.auc == pytest.approx(7 / 9, abs=1e-12)


def test_identical_loss_sets_give_chance_auc_and_zero_advantage():
    losses = [0.3, 0.1, 0.7, 0.2]
    result = membership_inference(losses, losses)
    assert result.auc == pytest.approx(0.5, abs=1e-12)
    assert result.advantage == pytest.approx(0.0, abs=1e-12)
    assert result.tpr_at_1pct_fpr == 0.0


def test_separated_losses_give_perfect_attack():
    result = membership_inference([0.01, 0.02, 0.03], [1.0, 2.0, 3.0])
    assert result.auc == 1.0 and result.advantage == 1.0 and result.tpr_at_1pct_fpr == 1.0


# --------------------------------------------------------------------- references


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rounded", [False, True], ids=["continuous", "ties"])
def test_matches_mann_whitney_sklearn_and_a_threshold_sweep(seed, rounded):
    rng = np.random.default_rng(seed)
    members = rng.gamma(2.0, 0.3, size=400)
    nonmembers = rng.gamma(2.0, 0.45, size=400)
    if rounded:
        members, nonmembers = members.round(1), nonmembers.round(1)
    result = membership_inference(torch.from_numpy(members), nonmembers)

    # AUC = P(member loss < non-member loss) + P(tie) / 2 = U / (n_m n_n).
    u = mannwhitneyu(nonmembers, members, alternative="two-sided").statistic
    assert result.auc == pytest.approx(u / (400 * 400), abs=1e-12)
    labels = np.r_[np.ones(400), np.zeros(400)]
    assert result.auc == pytest.approx(
        roc_auc_score(labels, -np.r_[members, nonmembers]), abs=1e-12
    )

    tpr, fpr = _sweep(members, nonmembers)
    assert result.advantage == pytest.approx((tpr - fpr).max(), abs=1e-12)
    assert result.tpr_at_1pct_fpr == pytest.approx(tpr[fpr <= 0.01].max(), abs=1e-12)
    tau = members.mean()
    expected_yeom = (members <= tau).mean() - (nonmembers <= tau).mean()
    assert result.yeom_advantage == pytest.approx(expected_yeom, abs=1e-12)
    # The reported threshold attains the reported advantage.
    t = result.threshold
    assert (members <= t).mean() - (nonmembers <= t).mean() == pytest.approx(result.advantage)


# --------------------------------------------------------------------- balancing


def test_larger_set_is_subsampled_to_the_smaller_and_seeded():
    members = np.linspace(0.0, 1.0, 10)
    nonmembers = np.linspace(0.5, 3.0, 50)
    result = membership_inference(members, nonmembers, seed=3)
    assert (result.n_members, result.n_nonmembers) == (10, 10)
    assert (result.n_members_given, result.n_nonmembers_given) == (10, 50)
    assert membership_inference(members, nonmembers, seed=3) == result
    aucs = {membership_inference(members, nonmembers, seed=s).auc for s in range(10)}
    assert len(aucs) > 1  # different subsamples

    swapped = membership_inference(nonmembers, members, seed=3)
    assert (swapped.n_members, swapped.n_nonmembers) == (10, 10)
    assert swapped.n_members_given == 50


def test_as_dict_has_flat_float_keys():
    d = membership_inference(MEMBERS, NONMEMBERS).as_dict()
    assert set(d) == {
        "mia_auc",
        "mia_advantage",
        "mia_yeom_advantage",
        "mia_tpr_at_1pct_fpr",
        "mia_n_members",
        "mia_n_nonmembers",
    }
    assert all(isinstance(v, float) for v in d.values())
    assert d["mia_n_members"] == 3.0


# --------------------------------------------------------------------- model behaviour


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
    model.eval()


def test_memorising_model_has_high_membership_advantage():
    # 32 random inputs with random labels: only memorisation fits them.
    g = torch.Generator().manual_seed(0)
    x_in, x_out = torch.randn(32, 20, generator=g), torch.randn(32, 20, generator=g)
    y_in = torch.randint(0, 10, (32,), generator=g)
    y_out = torch.randint(0, 10, (32,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, 10))
    _train(model, x_in, y_in, steps=60, lr=2e-2)

    members = per_sample_loss(model, x_in, y_in)
    assert members.mean() < 0.05  # memorised
    result = membership_inference(members, per_sample_loss(model, x_out, y_out))
    assert result.advantage > 0.5
    assert result.auc > 0.9
    assert result.yeom_advantage > 0.5


def test_generalising_model_has_membership_advantage_near_zero():
    # Logistic regression on a linearly separable task; members and non-members from the
    # same distribution, 2000 each. Sampling noise alone gives an advantage (a one-sided
    # two-sample Kolmogorov-Smirnov statistic) below about 0.04 (its 95 % quantile,
    # 1.36 * sqrt(2 / 2000)); the bound is 0.1. Seeds 0-5 gave 0.006-0.025.
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, generator=g)
    x_in, x_out = torch.randn(2000, 5, generator=g), torch.randn(2000, 5, generator=g)
    y_in, y_out = (x_in @ w > 0).long(), (x_out @ w > 0).long()
    torch.manual_seed(1)
    model = nn.Linear(5, 2)
    _train(model, x_in, y_in, steps=150, lr=5e-2)

    accuracy = (model(x_out).argmax(dim=1) == y_out).float().mean()
    assert accuracy > 0.95  # it generalises
    result = membership_inference(
        per_sample_loss(model, x_in, y_in, batch_size=512),
        per_sample_loss(model, x_out, y_out, batch_size=512),
    )
    assert result.advantage < 0.1
    assert abs(result.auc - 0.5) < 0.05
    assert abs(result.yeom_advantage) < 0.1


# --------------------------------------------------------------------- per_sample_loss


def test_per_sample_loss_equals_cross_entropy_and_does_not_depend_on_batch_size():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(37, 6, generator=g), torch.randint(0, 3, (37,), generator=g)
    model = nn.Linear(6, 3)
    expected = F.cross_entropy(model(x), y, reduction="none").detach()
    for batch_size in (1, 5, 37, 100):
        losses = per_sample_loss(model, x, y, batch_size=batch_size)
        assert losses.shape == (37,) and not losses.requires_grad
        torch.testing.assert_close(losses, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("model", "x", "y", "batch_size", "message"),
    [
        (nn.Linear(4, 2), torch.randn(3, 4), torch.zeros(3, dtype=torch.long), 0, "batch_size"),
        (nn.Linear(4, 2), torch.randn(3, 4), torch.zeros(2, dtype=torch.long), 8, "one target"),
        (nn.Linear(4, 2), torch.randn(0, 4), torch.zeros(0, dtype=torch.long), 8, "at least one"),
        (nn.Linear(4, 2), torch.randn(3, 4), torch.zeros(3), 8, "integer class indices"),
        (lambda x: x.sum(dim=1), torch.randn(3, 4), torch.zeros(3, dtype=torch.long), 8, "logits"),
        (nn.Linear(4, 2), np.zeros((3, 4)), torch.zeros(3, dtype=torch.long), 8, "torch tensors"),
    ],
    ids=["batch-size", "mismatch", "empty", "float-targets", "not-logits", "numpy"],
)
def test_per_sample_loss_rejects_bad_input(model, x, y, batch_size, message):
    with pytest.raises(ValueError, match=message):
        per_sample_loss(model, x, y, batch_size=batch_size)


# --------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("members", "nonmembers", "message"),
    [
        ([], NONMEMBERS, "at least one loss in `member_losses`"),
        (MEMBERS, np.array([]), "at least one loss in `nonmember_losses`"),
        ([0.1, math.nan], NONMEMBERS, "finite losses in `member_losses`.*1 of 2"),
        (MEMBERS, torch.tensor([0.2, math.inf]), "finite losses in `nonmember_losses`"),
        ([[0.1, 0.2]], NONMEMBERS, r"shape \(N,\)"),
        (["a", "b"], NONMEMBERS, "convert to floats"),
    ],
    ids=["empty-members", "empty-nonmembers", "nan", "inf", "2d", "strings"],
)
def test_invalid_losses_raise_value_error(members, nonmembers, message):
    with pytest.raises(ValueError, match=message):
        membership_inference(members, nonmembers)


@pytest.mark.parametrize("seed", [1.5, True, "0"])
def test_invalid_seed_raises_value_error(seed):
    with pytest.raises(ValueError, match="`seed` to be an integer"):
        membership_inference(MEMBERS, NONMEMBERS, seed=seed)


def test_result_type_and_docstring_examples_hold():
    import tai.principles.privacy.membership as module

    assert isinstance(membership_inference(MEMBERS, NONMEMBERS), MembershipInference)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
