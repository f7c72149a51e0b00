"""Loss-threshold membership inference against hand-computed cases, scikit-learn, scipy's
Mann-Whitney U, statsmodels' Newcombe interval, a brute-force threshold sweep, seeded
simulations with and without a leak, and two model behaviours: memorising and
generalising."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu, norm
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import confint_proportions_2indep
from torch import nn

from tai.principles.privacy.membership import (
    HeldOutAdvantage,
    MembershipInference,
    membership_inference,
    newcombe_interval,
    per_sample_loss,
    split_half_advantage,
)

MEMBERS = [0.1, 0.2, 0.3]
NONMEMBERS = [0.25, 0.5, 0.9]
# Seeds of the simulations: the mean of 200 held-out advantages has a standard error of
# about 0.027 / sqrt(200) = 0.002 without a leak (n = 512).
SIMULATION_SEEDS = range(200)


@pytest.fixture(autouse=True)
def _one_thread():
    """Two threads on a shared, busy machine run these small tensors several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _sweep(members: np.ndarray, nonmembers: np.ndarray):
    """(thresholds, TPR, FPR) of "member when loss <= t" for t = -inf and every loss value,
    in increasing order."""
    thresholds = np.concatenate([[-np.inf], np.unique(np.concatenate([members, nonmembers]))])
    tpr = np.array([(members <= t).mean() for t in thresholds])
    fpr = np.array([(nonmembers <= t).mean() for t in thresholds])
    return thresholds, tpr, fpr


def _fitted_threshold(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """The brute-force threshold of the held-out advantage: the lowest t with the best J,
    moved halfway to the next loss; -inf when the best is "never member"."""
    thresholds, tpr, fpr = _sweep(members, nonmembers)
    j = tpr - fpr
    best = np.flatnonzero(j >= j.max() - 1e-12)[0]
    return -math.inf if best == 0 else float((thresholds[best] + thresholds[best + 1]) / 2)


def _documented_folds(members: np.ndarray, nonmembers: np.ndarray, seed: int):
    """The balancing and split of the module docstring, written out again."""
    rng = np.random.default_rng(seed)
    n = min(members.size, nonmembers.size)
    if members.size > n:
        members = members[np.sort(rng.choice(members.size, size=n, replace=False))]
    if nonmembers.size > n:
        nonmembers = nonmembers[np.sort(rng.choice(nonmembers.size, size=n, replace=False))]
    members, nonmembers = members[rng.permutation(n)], nonmembers[rng.permutation(n)]
    return (members[: n // 2], nonmembers[: n // 2]), (members[n // 2 :], nonmembers[n // 2 :])


# --------------------------------------------------------------------- hand-computed cases


def test_hand_computed_split_half_advantage():
    # Fold one: members 0.1, 0.4; non-members 0.3, 0.8. TPR - FPR at loss <= 0.1: 1/2 - 0;
    # at 0.3: 1/2 - 1/2; at 0.4: 1 - 1/2; at 0.8: 0. Best 1/2, first reached at 0.1; the
    # next loss of the fold is 0.3: tau_1 = 0.2.
    # Fold two: members 0.18, 0.5; non-members 0.15, 0.6. At 0.15: 0 - 1/2; at 0.18:
    # 1/2 - 1/2; at 0.5: 1 - 1/2; at 0.6: 0. Best 1/2 at 0.5, next 0.6: tau_2 = 0.55.
    # Fold one judged at 0.55: members 0.1, 0.4 flagged (2), non-member 0.3 (1).
    # Fold two judged at 0.2: member 0.18 flagged (1), non-member 0.15 (1).
    # Pooled: 3/4 - 2/4 = 1/4.
    held_out = split_half_advantage(([0.1, 0.4], [0.3, 0.8]), ([0.18, 0.5], [0.15, 0.6]))
    assert held_out.thresholds == pytest.approx((0.2, 0.55), abs=1e-15)
    assert (held_out.members_flagged, held_out.nonmembers_flagged) == (3, 2)
    assert (held_out.n_members, held_out.n_nonmembers) == (4, 4)
    assert held_out.advantage == pytest.approx(0.25, abs=1e-12)
    # Newcombe's interval of 3/4 - 2/4 (statsmodels' "newcomb").
    lower, upper = confint_proportions_2indep(3, 4, 2, 4, method="newcomb", compare="diff")
    assert (held_out.lower, held_out.upper) == pytest.approx((lower, upper), abs=1e-12)
    assert held_out.confidence == 0.95
    # The same losses judged in-sample (members 0.1 0.18 0.4 0.5, non-members 0.15 0.3 0.6
    # 0.8): at 0.5, TPR 1 and FPR 1/2, twice the held-out advantage.
    _, tpr, fpr = _sweep(np.array([0.1, 0.18, 0.4, 0.5]), np.array([0.15, 0.3, 0.6, 0.8]))
    assert (tpr - fpr).max() == pytest.approx(0.5)


def test_ties_keep_the_lowest_best_loss_and_folds_of_unequal_size_pool_their_counts():
    # Fold one (1 member, 1 non-member): best at 0.1 (1 - 0), next loss 0.7: tau_1 = 0.4.
    # Fold two (2 and 2): at 0.2, 1/2 - 0; at 0.25, 1/2 - 1/2; at 0.3, 1 - 1/2; at 0.9, 0:
    # a tie at 1/2, the lowest (0.2) is kept, next loss 0.25: tau_2 = 0.225.
    # Fold one at 0.225: member 0.1 flagged, non-member 0.7 not. Fold two at 0.4: members
    # 0.2, 0.3 and non-member 0.25 flagged. Pooled over 3 and 3: 3/3 - 1/3.
    held_out = split_half_advantage(([0.1], [0.7]), ([0.2, 0.3], [0.25, 0.9]))
    assert held_out.thresholds == pytest.approx((0.4, 0.225), abs=1e-15)
    assert (held_out.members_flagged, held_out.nonmembers_flagged) == (3, 1)
    assert held_out.advantage == pytest.approx(2 / 3, abs=1e-12)


def test_a_fold_without_a_useful_threshold_flags_nothing():
    # Fold one: every member loss above every non-member loss: no threshold beats
    # "never member" (J = 0), so tau_1 = -inf and fold two is never flagged. Fold two:
    # best at 0.2 (1 - 0), next loss 0.8: tau_2 = 0.5, which flags fold one's non-members.
    held_out = split_half_advantage(([0.8, 0.9], [0.1, 0.2]), ([0.1, 0.2], [0.8, 0.9]))
    assert held_out.thresholds == (-math.inf, 0.5)
    assert (held_out.members_flagged, held_out.nonmembers_flagged) == (0, 2)
    assert held_out.advantage == pytest.approx(-0.5)
    assert -1.0 <= held_out.lower < held_out.advantage < held_out.upper <= 1.0


def test_hand_computed_auc_yeom_and_low_fpr_tpr_stay_in_sample():
    # Pairs (member, non-member) with a lower member loss: 3 + 3 + 2 of 9.
    # loss <= 0.2: TPR 2/3, FPR 0; loss <= 0.3: TPR 1, FPR 1/3; Yeom's tau = 0.2.
    result = membership_inference(MEMBERS, NONMEMBERS)
    assert result.auc == pytest.approx(8 / 9, abs=1e-12)
    assert result.advantage_in_sample == pytest.approx(2 / 3, abs=1e-12)
    assert result.yeom_advantage == pytest.approx(2 / 3, abs=1e-12)
    assert result.tpr_at_1pct_fpr == pytest.approx(2 / 3, abs=1e-12)
    assert (result.n_members, result.n_nonmembers) == (3, 3)
    assert result.advantage_lower <= result.advantage <= result.advantage_upper


def test_yeom_threshold_can_be_worse_than_the_best_threshold():
    # tau = mean member loss = 0.4: TPR 2/3 (0.0, 0.1 <= 0.4), FPR 2/3 (0.2, 0.3) -> 0.
    # Best: loss <= 0.1 gives TPR 2/3, FPR 0 -> 2/3.
    result = membership_inference([0.0, 0.1, 1.1], [0.2, 0.3, 2.0])
    assert result.yeom_advantage == pytest.approx(0.0, abs=1e-12)
    assert result.advantage_in_sample == pytest.approx(2 / 3, abs=1e-12)
    assert result.auc == pytest.approx(7 / 9, abs=1e-12)


def test_identical_loss_sets_give_chance_auc_and_zero_advantage():
    losses = [0.3, 0.1, 0.7, 0.2]
    result = membership_inference(losses, losses)
    assert result.auc == pytest.approx(0.5, abs=1e-12)
    assert result.advantage_in_sample == pytest.approx(0.0, abs=1e-12)
    assert result.tpr_at_1pct_fpr == 0.0
    assert result.advantage_lower < 0 < result.advantage_upper


def test_separated_losses_give_perfect_attack():
    # Every fold's threshold lies between its largest member loss (<= 0.04) and smallest
    # non-member loss (>= 1.0), at most (0.04 + 1.3) / 2 < 1.0: held out, still perfect.
    result = membership_inference([0.01, 0.02, 0.03, 0.04], [1.0, 1.1, 1.2, 1.3])
    assert result.auc == 1.0 and result.advantage_in_sample == 1.0
    assert result.advantage == 1.0 and result.tpr_at_1pct_fpr == 1.0
    # Wilson at 4 of 4 and 0 of 4: the interval stays below 1 and well above 0.
    assert 0.3 < result.advantage_lower < result.advantage_upper == 1.0


# --------------------------------------------------------------------- references


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rounded", [False, True], ids=["continuous", "ties"])
def test_matches_mann_whitney_sklearn_and_a_threshold_sweep(seed, rounded):
    rng = np.random.default_rng(seed)
    members = rng.gamma(2.0, 0.3, size=400)
    nonmembers = rng.gamma(2.0, 0.45, size=400)
    if rounded:
        members, nonmembers = members.round(1), nonmembers.round(1)
    result = membership_inference(torch.from_numpy(members), nonmembers, seed=seed)

    # AUC = P(member loss < non-member loss) + P(tie) / 2 = U / (n_m n_n).
    u = mannwhitneyu(nonmembers, members, alternative="two-sided").statistic
    assert result.auc == pytest.approx(u / (400 * 400), abs=1e-12)
    labels = np.r_[np.ones(400), np.zeros(400)]
    assert result.auc == pytest.approx(
        roc_auc_score(labels, -np.r_[members, nonmembers]), abs=1e-12
    )

    _, tpr, fpr = _sweep(members, nonmembers)
    assert result.advantage_in_sample == pytest.approx((tpr - fpr).max(), abs=1e-12)
    assert result.tpr_at_1pct_fpr == pytest.approx(tpr[fpr <= 0.01].max(), abs=1e-12)
    tau = members.mean()
    expected_yeom = (members <= tau).mean() - (nonmembers <= tau).mean()
    assert result.yeom_advantage == pytest.approx(expected_yeom, abs=1e-12)

    # The held-out advantage: each fold's threshold from a brute-force sweep of that fold,
    # applied to the other fold; the interval from statsmodels.
    one, two = _documented_folds(members, nonmembers, seed)
    taus = (_fitted_threshold(*one), _fitted_threshold(*two))
    assert result.thresholds == pytest.approx(taus)
    flagged_members = (one[0] <= taus[1]).sum() + (two[0] <= taus[0]).sum()
    flagged_nonmembers = (one[1] <= taus[1]).sum() + (two[1] <= taus[0]).sum()
    assert (result.members_flagged, result.nonmembers_flagged) == (
        flagged_members,
        flagged_nonmembers,
    )
    assert result.advantage == pytest.approx((flagged_members - flagged_nonmembers) / 400)
    lower, upper = confint_proportions_2indep(
        flagged_members, 400, flagged_nonmembers, 400, method="newcomb", compare="diff"
    )
    assert (result.advantage_lower, result.advantage_upper) == pytest.approx(
        (lower, upper), abs=1e-12
    )
    # Held out, the threshold cannot be tuned to these samples: never above the in-sample.
    assert result.advantage <= result.advantage_in_sample


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2"),
    [
        (0, 10, 0, 10),
        (10, 10, 0, 10),
        (0, 7, 7, 7),
        (3, 10, 7, 10),
        (256, 512, 230, 512),
        (500, 512, 12, 512),
        (5, 9, 2, 30),
    ],
)
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_newcombe_interval_matches_statsmodels(k1, n1, k2, n2, confidence):
    expected = confint_proportions_2indep(
        k1, n1, k2, n2, method="newcomb", compare="diff", alpha=1 - confidence
    )
    assert newcombe_interval(k1, n1, k2, n2, confidence) == pytest.approx(expected, abs=1e-12)


def test_the_split_is_the_documented_one_and_follows_the_balancing():
    rng = np.random.default_rng(7)
    members, nonmembers = rng.gamma(2.0, 0.3, size=41), rng.gamma(2.0, 0.4, size=100)
    result = membership_inference(members, nonmembers, seed=5, confidence=0.9)
    one, two = _documented_folds(members, nonmembers, seed=5)
    assert (one[0].size, two[0].size, one[1].size, two[1].size) == (20, 21, 20, 21)
    held_out = split_half_advantage(one, two, confidence=0.9)
    assert isinstance(held_out, HeldOutAdvantage)
    assert result.advantage == held_out.advantage
    assert result.advantage_bounds == (held_out.lower, held_out.upper)
    assert result.thresholds == held_out.thresholds
    assert result.confidence == 0.9


def test_a_higher_confidence_gives_a_wider_interval():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(-0.5, 1, 300), rng.normal(0, 1, 300)
    widths = []
    for confidence in (0.8, 0.95, 0.99):
        r = membership_inference(members, nonmembers, confidence=confidence)
        assert r.advantage_lower < r.advantage < r.advantage_upper
        widths.append(r.advantage_upper - r.advantage_lower)
    assert widths[0] < widths[1] < widths[2]


# --------------------------------------------------------------------- simulations


def test_no_leak_gives_a_held_out_advantage_near_zero_where_the_in_sample_one_is_not():
    # Members and non-members: 512 draws each from one normal distribution, 200 seeds.
    # The in-sample best TPR - FPR (the old `advantage`) is the one-sided two-sample KS
    # statistic, mean about sqrt(pi / 8) * sqrt(2 / 512) = 0.039 (0.037 measured). The
    # held-out one has mean 0 and a standard deviation of about 0.027 per seed, so its
    # mean over 200 seeds has a standard error of 0.002: the tolerance 0.01 is 5 of them.
    # Its 95% interval holds 0 in about 95.5% of the seeds (binomial sd 1.5 points over
    # 200): at least 90% are required.
    held_out, in_sample, zero_inside = [], [], 0
    for seed in SIMULATION_SEEDS:
        rng = np.random.default_rng(1000 + seed)
        result = membership_inference(rng.normal(size=512), rng.normal(size=512), seed=seed)
        held_out.append(result.advantage)
        in_sample.append(result.advantage_in_sample)
        zero_inside += result.advantage_lower <= 0.0 <= result.advantage_upper
        assert result.advantage_upper < 0.15
    assert abs(np.mean(held_out)) < 0.01
    assert np.mean(in_sample) > 0.03  # the optimism the held-out estimate removes
    assert zero_inside >= 0.9 * len(SIMULATION_SEEDS)


def test_a_strong_leak_gives_a_large_advantage_with_a_lower_bound_well_above_zero():
    # Member losses exponential with mean 0.1, non-member losses with mean 1: the best
    # threshold t = ln(10) / 9 has advantage exp(-t) - exp(-10 t) = 0.697.
    best = math.exp(-math.log(10) / 9) - math.exp(-10 * math.log(10) / 9)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        members, nonmembers = rng.exponential(0.1, 512), rng.exponential(1.0, 512)
        result = membership_inference(members, nonmembers, seed=seed)
        assert result.advantage > 0.6
        assert result.advantage_lower > 0.5
        assert result.advantage_upper < best + 0.1
        assert result.advantage_lower < result.advantage < result.advantage_upper


def test_the_interval_covers_the_advantage_of_the_fitted_thresholds():
    # Members N(-0.5, 1), non-members N(0, 1), 256 each: the population advantage of a
    # threshold t is Phi(t + 0.5) - Phi(t); the estimand is its mean at the two thresholds
    # (equal folds). Simulated coverage at 95%: about 94-95%; at least 88% of 200 seeds
    # are required (binomial sd 1.6 points).
    covered = 0
    for seed in SIMULATION_SEEDS:
        rng = np.random.default_rng(5000 + seed)
        members, nonmembers = rng.normal(-0.5, 1, 256), rng.normal(0, 1, 256)
        result = membership_inference(members, nonmembers, seed=seed)
        target = np.mean([norm.cdf(t + 0.5) - norm.cdf(t) for t in result.thresholds])
        covered += result.advantage_lower <= target <= result.advantage_upper
    assert covered >= 0.88 * len(SIMULATION_SEEDS)


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
        "mia_advantage_lower",
        "mia_advantage_upper",
        "mia_yeom_advantage",
        "mia_tpr_at_1pct_fpr",
        "mia_advantage_in_sample",
        "mia_confidence",
        "mia_n_members",
        "mia_n_nonmembers",
    }
    assert all(isinstance(v, float) for v in d.values())
    assert d["mia_n_members"] == 3.0 and d["mia_confidence"] == 0.95


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
    assert result.advantage_lower > 0.5  # 30 of 32 members flagged, no non-member
    assert result.auc > 0.9
    assert result.yeom_advantage > 0.5


def test_generalising_model_has_membership_advantage_near_zero():
    # Logistic regression on a linearly separable task; members and non-members from the
    # same distribution, 2000 each. The held-out advantage has a standard deviation of
    # about 0.6 / sqrt(2000) = 0.014 without a leak; its interval must hold 0.
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
    assert abs(result.advantage) < 0.05
    assert result.advantage_lower <= 0.0 <= result.advantage_upper
    assert result.advantage_upper < 0.05
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
        ([0.1], NONMEMBERS, "at least 2 members and 2 non-members, but got 1 and 3"),
    ],
    ids=["empty-members", "empty-nonmembers", "nan", "inf", "2d", "strings", "one-member"],
)
def test_invalid_losses_raise_value_error(members, nonmembers, message):
    with pytest.raises(ValueError, match=message):
        membership_inference(members, nonmembers)


@pytest.mark.parametrize("seed", [1.5, True, "0"])
def test_invalid_seed_raises_value_error(seed):
    with pytest.raises(ValueError, match="`seed` to be an integer"):
        membership_inference(MEMBERS, NONMEMBERS, seed=seed)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95, math.nan, True])
def test_invalid_confidence_raises_value_error(confidence):
    with pytest.raises(ValueError, match="`confidence`"):
        membership_inference(MEMBERS, NONMEMBERS, confidence=confidence)
    with pytest.raises(ValueError, match="`confidence`"):
        newcombe_interval(1, 2, 1, 2, confidence)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 2, 1, 2), "at most `n` successes"),
        ((1, 0, 1, 2), "`n_1` to be an integer >= 1"),
        ((-1, 2, 1, 2), "`successes_1` to be an integer >= 0"),
        ((1, 2, 1.5, 2), "`successes_2` to be an integer"),
    ],
)
def test_newcombe_interval_rejects_bad_counts(args, message):
    with pytest.raises(ValueError, match=message):
        newcombe_interval(*args)


def test_a_fold_without_members_is_refused():
    with pytest.raises(ValueError, match=r"at least one loss in `fold_two\[0\] \(members\)`"):
        split_half_advantage(([0.1], [0.2]), ([], [0.3]))


def test_result_type_and_docstring_examples_hold():
    import tai.principles.privacy.membership as module

    assert isinstance(membership_inference(MEMBERS, NONMEMBERS), MembershipInference)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------- pinned details


def test_a_loss_equal_to_the_threshold_counts_as_flagged():
    """ "member" means loss <= tau, boundary included: dyadic losses make the midpoint
    thresholds exact, and two losses of fold two sit on fold one's threshold."""
    held_out = split_half_advantage(([0.25, 0.375], [0.625, 0.75]), ([0.5, 0.125], [0.5, 0.875]))
    # Fold one: best between 0.375 and 0.625, tau = 0.5. Fold two: TPR - FPR ties at 0.5
    # for loss <= 0.125 and <= 0.5; the lowest wins, tau = (0.125 + 0.5) / 2 = 0.3125.
    assert held_out.thresholds == (0.5, 0.3125)
    # Fold one by 0.3125: members 0.25 (1 of 2), no non-member; fold two by 0.5: members
    # 0.5 and 0.125 (2 of 2), non-member 0.5 (1 of 2).
    assert (held_out.members_flagged, held_out.nonmembers_flagged) == (3, 1)
    assert held_out.advantage == 0.5


def test_the_yeom_threshold_flags_a_loss_equal_to_the_mean_member_loss():
    result = membership_inference([0.25, 0.5, 0.75], [0.625, 1.0, 1.5])
    # Mean member loss 0.5: members 0.25 and 0.5 flagged (2/3), no non-member.
    assert result.yeom_advantage == pytest.approx(2 / 3)


def test_two_members_and_two_non_members_are_enough_one_is_not():
    result = membership_inference([0.1, 0.2], [0.8, 0.9])
    assert (result.n_members, result.n_nonmembers) == (2, 2)
    with pytest.raises(ValueError) as refused:
        membership_inference([0.1], [0.8, 0.9])
    assert str(refused.value) == (
        "Expected at least 2 members and 2 non-members, but got 1 and 2: the held-out "
        "advantage fits its threshold on one half of each and scores it on the other."
    )


def test_membership_inference_defaults_to_seed_0_and_95_percent():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.exponential(1.0, 60), rng.exponential(1.3, 80)
    default = membership_inference(members, nonmembers)
    assert default == membership_inference(members, nonmembers, seed=0, confidence=0.95)
    assert default != membership_inference(members, nonmembers, seed=1)


def test_loss_messages_name_the_fold_and_the_side_in_full():
    def message(fold_one, fold_two) -> str:
        with pytest.raises(ValueError) as refused:
            split_half_advantage(fold_one, fold_two)
        return str(refused.value)

    assert message(([0.1], []), ([0.1], [0.2])) == (
        "Expected at least one loss in `fold_one[1] (non-members)`, but got none. The attack "
        "needs both members (training samples) and non-members (held-out samples)."
    )
    assert message(([0.1], [0.2]), ([math.inf], [0.2])) == (
        "Expected finite losses in `fold_two[0] (members)`, but 1 of 1 are NaN or inf. Check "
        "the model output for overflow (compute the loss from logits)."
    )
    assert message(([0.1], [0.2]), ([0.1], ["high"])).startswith(
        "Expected `fold_two[1] (non-members)` to be a 1-D sequence of per-sample losses, but "
        "got list that does not convert to floats ("
    )


def test_seed_batch_size_and_count_messages_in_full():
    with pytest.raises(ValueError) as refused:
        membership_inference([0.1, 0.2], [0.3, 0.4], seed=1.5)
    assert str(refused.value) == (
        "Expected argument `seed` to be an integer, but got 1.5. The same seed subsamples the "
        "same samples."
    )
    model = nn.Linear(2, 2)
    for batch_size in (1.5, 0, True):
        with pytest.raises(ValueError) as refused:
            per_sample_loss(model, torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), batch_size)
        assert str(refused.value) == (
            f"Expected `batch_size` to be an integer >= 1, but got {batch_size!r}."
        )
    with pytest.raises(ValueError) as refused:
        newcombe_interval(1, 2, 0, 0)
    assert str(refused.value) == "Expected `n_2` to be an integer >= 1, but got 0."
    lower, upper = newcombe_interval(1, 1, 0, 1)  # one sample each: n = 1 is allowed
    assert -1.0 <= lower < upper <= 1.0


def test_float32_losses_are_read_as_float64():
    members = torch.tensor([0.1, 0.4], dtype=torch.float32)
    nonmembers = torch.tensor([0.3, 0.8], dtype=torch.float32)
    held_out = split_half_advantage((members, nonmembers), (members, nonmembers))
    # The midpoint of the float32 values 0.1 and 0.3, computed in float64.
    expected = float(np.float64(np.float32(0.1)) / 2 + np.float64(np.float32(0.3)) / 2)
    assert held_out.thresholds == (expected, expected)
