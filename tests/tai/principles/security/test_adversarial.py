"""FGSM and PGD against torchattacks, a linear model worked by hand, and their invariants."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tai.principles.security.adversarial import (
    AdversarialResult,
    adversarial_accuracy,
    epsilon_key,
    fgsm,
    pgd,
)

N_CLASSES = 3
EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


@pytest.fixture(autouse=True)
def _one_thread():
    """Two threads on a shared, busy machine run these small tensors several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _synthetic(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Three 8x8 templates (bright top, left, centre) plus Gaussian noise, clamped to [0, 1]."""
    templates = torch.zeros(N_CLASSES, 1, 8, 8)
    templates[0, :, :4, :] = 1
    templates[1, :, :, :4] = 1
    templates[2, :, 2:6, 2:6] = 1
    targets = torch.arange(n) % N_CLASSES
    images = 0.3 + 0.4 * templates[targets] + 0.25 * torch.randn(n, 1, 8, 8, generator=generator)
    return images.clamp(0, 1), targets


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny CNN trained to ~100% clean accuracy; returns it with 150 held-out images."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    train_x, train_y = _synthetic(300, g)
    test_x, test_y = _synthetic(150, g)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, N_CLASSES)
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(80):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(train_x), train_y).backward()
        optimiser.step()
    model.zero_grad(set_to_none=True)
    torch.set_num_threads(threads)
    return model, test_x, test_y


def _linear(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), linear)


def _robust_accuracy(model: nn.Module, images, targets, adv) -> float:
    """RobustBench's convention: correct clean and correct under attack."""
    with torch.no_grad():
        ok = (model(images).argmax(dim=1) == targets) & (model(adv).argmax(dim=1) == targets)
    return ok.float().mean().item()


# -------------------------------------------------------------------- hand-worked: linear


def test_fgsm_moves_each_pixel_by_eps_along_the_weight_difference_of_a_linear_model():
    # Cross-entropy of class y under logits W x + b has gradient sum_k (p_k - [k = y]) w_k;
    # with two classes and y = 0 that is p_1 (w_1 - w_0), so FGSM moves x by
    # eps * sign(w_1 - w_0) (and by eps * sign(w_0 - w_1) for y = 1).
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(2, 12, generator=g)
    images = 0.25 + 0.5 * torch.rand(4, 3, 2, 2, generator=g)  # eps = 0.1 never clips
    targets = torch.tensor([0, 1, 0, 1])
    adv = fgsm(_linear(weight, torch.tensor([0.3, -0.2])), images, targets, eps=0.1)
    direction = (weight[1] - weight[0]).sign().reshape(3, 2, 2)
    expected = torch.stack([direction if t == 0 else -direction for t in targets])
    torch.testing.assert_close(adv - images, 0.1 * expected, rtol=0, atol=1e-6)


def test_fgsm_clips_to_the_unit_range():
    model = _linear(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
    images = torch.tensor([[[[0.95, 0.05]]]])
    adv = fgsm(model, images, torch.tensor([0]), eps=0.2)
    assert adv.flatten().tolist() == [1.0, 0.0]


def test_pgd_on_a_linear_model_reaches_the_corner_of_the_ball():
    # The gradient sign of a linear model is the same everywhere, so PGD without random start
    # walks straight to images + eps * sign(w_1 - w_0) in ceil(1 / 0.25) = 4 of its 10 steps.
    weight = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5]])
    images = torch.full((1, 1, 1, 3), 0.5)
    adv = pgd(_linear(weight), images, torch.tensor([0]), eps=0.2, random_start=False)
    torch.testing.assert_close(adv.flatten(), torch.tensor([0.7, 0.3, 0.7]), rtol=0, atol=1e-6)


# --------------------------------------------------------------- reference: torchattacks


def _torchattacks():
    return pytest.importorskip(
        "torchattacks",
        reason="torchattacks is the reference implementation; install it with "
        "`pip install --no-deps torchattacks==3.5.1` (it pins an old requests).",
    )


def test_fgsm_matches_torchattacks_image_for_image(trained):
    torchattacks = _torchattacks()
    model, images, targets = trained
    for eps in EPSILONS[1:]:
        expected = torchattacks.FGSM(model, eps=eps)(images, targets)
        torch.testing.assert_close(fgsm(model, images, targets, eps), expected, rtol=0, atol=0)


def test_fgsm_accuracy_agrees_with_torchattacks_within_one_point(trained):
    torchattacks = _torchattacks()
    model, images, targets = trained
    result = adversarial_accuracy(model, images, targets, epsilons=EPSILONS, attack="fgsm")
    for eps, accuracy in zip(EPSILONS[1:], result.accuracy[1:], strict=True):
        adv = torchattacks.FGSM(model, eps=eps)(images, targets)
        assert accuracy == pytest.approx(_robust_accuracy(model, images, targets, adv), abs=0.01)


def test_pgd_without_random_start_matches_torchattacks_image_for_image(trained):
    torchattacks = _torchattacks()
    model, images, targets = trained
    for eps in (0.05, 0.2):
        attack = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=7, random_start=False)
        ours = pgd(model, images, targets, eps, steps=7, step_size=eps / 4, random_start=False)
        torch.testing.assert_close(ours, attack(images, targets), rtol=0, atol=1e-6)


def test_pgd_accuracy_agrees_with_torchattacks_within_two_points(trained):
    torchattacks = _torchattacks()
    model, images, targets = trained
    result = adversarial_accuracy(model, images, targets, epsilons=EPSILONS, steps=10, seed=1)
    assert result.accuracy[-1] < 0.5 < result.accuracy[1]  # the comparison is not vacuous
    torch.manual_seed(0)  # torchattacks draws its random start from the global generator
    for eps, accuracy in zip(EPSILONS[1:], result.accuracy[1:], strict=True):
        attack = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 10, steps=10)
        adv = attack(images, targets)
        assert accuracy == pytest.approx(_robust_accuracy(model, images, targets, adv), abs=0.02)


# ------------------------------------------------------------------------------ invariants


@pytest.mark.parametrize(
    ("attack", "random_start"), [("pgd", True), ("pgd", False), ("fgsm", False)]
)
def test_accuracy_is_non_increasing_in_eps_on_a_trained_model(trained, attack, random_start):
    model, images, targets = trained
    result = adversarial_accuracy(
        model, images, targets, epsilons=EPSILONS, attack=attack, random_start=random_start
    )
    assert result.accuracy[0] > result.accuracy[-1]
    assert all(a >= b for a, b in zip(result.accuracy, result.accuracy[1:], strict=False))


def test_eps_zero_gives_the_clean_accuracy(trained):
    model, images, targets = trained
    wrong = targets.clone()
    wrong[:15] = (wrong[:15] + 1) % N_CLASSES  # 15 of 150 labels wrong: clean accuracy < 1
    with torch.no_grad():
        clean = (model(images).argmax(dim=1) == wrong).float().mean().item()
    result = adversarial_accuracy(model, images, wrong, epsilons=(0.0, 0.1))
    assert clean < 0.95
    assert result.clean_accuracy == pytest.approx(clean)
    assert result.accuracy[0] == pytest.approx(clean)


@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_perturbation_stays_in_the_ball_and_the_unit_range(trained, attack):
    model, images, targets = trained
    images = images.clone()
    images[:, :, 0, :] = 0.0  # rows at the range's edges, where the clamps matter
    images[:, :, 1, :] = 1.0
    g = torch.Generator().manual_seed(0)
    for eps in (0.03, 0.3):
        if attack == "fgsm":
            adv = fgsm(model, images, targets, eps)
        else:  # a step larger than the ball, so every step must be projected
            adv = pgd(model, images, targets, eps, steps=5, step_size=2 * eps, generator=g)
        assert (adv - images).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert (adv - images).abs().max() >= eps - 1e-6  # it does move


def test_pgd_is_deterministic_for_a_generator_seed(trained):
    model, images, targets = trained

    def attack(seed: int) -> torch.Tensor:
        return pgd(
            model, images, targets, 0.1, steps=2, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(attack(5), attack(5))
    assert not torch.equal(attack(5), attack(6))


def test_adversarial_accuracy_is_deterministic_for_a_seed_and_independent_of_batch_size(trained):
    model, images, targets = trained
    kwargs = {"epsilons": (0.0, 0.15, 0.2), "steps": 3}
    first = adversarial_accuracy(model, images, targets, seed=4, batch_size=150, **kwargs)
    again = adversarial_accuracy(model, images, targets, seed=4, batch_size=150, **kwargs)
    batched = adversarial_accuracy(model, images, targets, seed=4, batch_size=16, **kwargs)
    assert first == again == batched


def test_model_mode_and_parameters_are_left_as_they_were(trained):
    model, images, targets = trained
    net = nn.Sequential(nn.Dropout(0.5), model)  # dropout would make the attack random
    net.train()
    frozen = model[0].bias
    frozen.requires_grad_(False)
    try:
        first = adversarial_accuracy(net, images, targets, epsilons=(0.0, 0.2), steps=2)
        second = adversarial_accuracy(net, images, targets, epsilons=(0.0, 0.2), steps=2)
        pgd(net, images, targets, 0.1, steps=1)
        fgsm(net, images, targets, 0.1)
        assert first == second
        assert net.training and model.training
        assert not frozen.requires_grad
        assert all(p.requires_grad for p in model.parameters() if p is not frozen)
        assert all(p.grad is None for p in model.parameters())
    finally:
        frozen.requires_grad_(True)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_attacks_run_inside_no_grad_and_inference_mode(trained, context):
    model, images, targets = trained
    expected = adversarial_accuracy(model, images, targets, epsilons=(0.0, 0.15), steps=2)
    with context():
        inside = adversarial_accuracy(model, images, targets, epsilons=(0.0, 0.15), steps=2)
        adv = fgsm(model, images.clone(), targets, 0.15)
    assert inside == expected
    assert (adv - images).abs().max() > 0.1


# --------------------------------------------------------------------------------- result


def test_result_as_dict_names_each_radius_and_averages_the_non_zero_ones():
    result = AdversarialResult(
        attack="pgd",
        epsilons=(0.0, 2 / 255, 8 / 255, 0.1),
        accuracy=[0.9, 0.7, 0.4, 0.1],
        clean_accuracy=0.9,
        steps=10,
        random_start=True,
    )
    assert result.as_dict() == {
        "pgd_clean_accuracy": 0.9,
        "pgd_mean_accuracy": pytest.approx((0.7 + 0.4 + 0.1) / 3),
        "pgd_accuracy_eps_0": 0.9,
        "pgd_accuracy_eps_2_255": 0.7,
        "pgd_accuracy_eps_8_255": 0.4,
        "pgd_accuracy_eps_0p1": 0.1,
    }


def test_fgsm_result_records_one_step_and_no_random_start(trained):
    model, images, targets = trained
    result = adversarial_accuracy(
        model, images, targets, epsilons=(0.1,), attack="fgsm", steps=20, random_start=True
    )
    assert (result.attack, result.steps, result.random_start) == ("fgsm", 1, False)
    assert set(result.as_dict()) == {
        "fgsm_clean_accuracy",
        "fgsm_mean_accuracy",
        "fgsm_accuracy_eps_0p1",
    }


@pytest.mark.parametrize(
    ("eps", "key"),
    [(0.0, "eps_0"), (1 / 255, "eps_1_255"), (1.0, "eps_255_255"), (0.25, "eps_0p25"),
     (0.0314, "eps_0p0314"), (0.1234567, "eps_0p123457")],
)  # fmt: skip
def test_epsilon_key_is_safe_for_a_policy_file(eps, key):
    assert epsilon_key(eps) == key


# ---------------------------------------------------------------------------------- errors


def _tiny():
    return _linear(torch.ones(2, 4)), torch.full((2, 1, 2, 2), 0.5), torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("eps", "match"),
    [
        (-0.1, r"`eps` in \[0, 1\].*got -0.1"),
        (1.5, r"`eps` in \[0, 1\].*got 1.5"),
        (math.nan, "`eps` to be finite, but got nan"),
        (True, "`eps` to be a real number, but got True"),
    ],
)
def test_bad_eps_is_rejected(eps, match):
    model, images, targets = _tiny()
    for call in (
        lambda: fgsm(model, images, targets, eps),
        lambda: pgd(model, images, targets, eps),
        lambda: adversarial_accuracy(model, images, targets, epsilons=(eps,)),
    ):
        with pytest.raises(ValueError, match=match.replace("`eps`", "`eps(ilons)?`")):
            call()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, r"`steps` to be an integer >= 1, but got 0"),
        ({"steps": 2.5}, r"`steps` to be an integer >= 1, but got 2.5"),
        ({"step_size": 0.0}, r"`step_size` > 0 or None .* got 0.0"),
        ({"random_start": 1}, r"`random_start` to be True or False, but got 1"),
        ({"generator": 3}, r"`generator` to be a torch.Generator or None, but got int"),
    ],
)
def test_bad_pgd_arguments_are_rejected(kwargs, match):
    model, images, targets = _tiny()
    with pytest.raises(ValueError, match=match):
        pgd(model, images, targets, 0.1, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attack": "cw"}, r"Unknown attack 'cw'. Expected one of \('pgd', 'fgsm'\)"),
        ({"epsilons": 0.1}, r"`epsilons` to be a sequence .* got 0.1"),
        ({"epsilons": (0.0,)}, r"at least one radius > 0 in `epsilons`, but got \[0.0\]"),
        ({"epsilons": (0.1, 0.1)}, r"distinct radii in `epsilons`"),
        ({"batch_size": 0}, r"`batch_size` to be an integer >= 1, but got 0"),
        ({"seed": "a"}, r"`seed` to be an integer, but got 'a'"),
        ({"steps": -1}, r"`steps` to be an integer >= 1, but got -1"),
    ],
)
def test_bad_adversarial_accuracy_arguments_are_rejected(kwargs, match):
    model, images, targets = _tiny()
    with pytest.raises(ValueError, match=match):
        adversarial_accuracy(model, images, targets, **kwargs)


@pytest.mark.parametrize(
    ("images", "targets", "match"),
    [
        (torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long), "empty batch"),
        (torch.full((2, 1, 2, 2), math.nan), torch.tensor([0, 1]), "found NaN or inf"),
        (torch.full((2, 1, 2, 2), 1.5), torch.tensor([0, 1]), r"in \[0, 1\], but got values"),
        (torch.zeros(2, 4), torch.tensor([0, 1]), r"shape \(N, C, H, W\), but got 2 dim"),
        (torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]), "dtype torch.uint8"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([0.0, 1.0]), "integer class indices"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([0, 1, 1]), "2 images and 3 targets"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([0, -1]), "indices >= 0 .* got -1"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([0, 2]), r"indices < 2 \(the model's"),
    ],
)
def test_bad_tensors_are_rejected(images, targets, match):
    model, _, _ = _tiny()
    for call in (
        lambda: fgsm(model, images, targets, 0.1),
        lambda: pgd(model, images, targets, 0.1),
        lambda: adversarial_accuracy(model, images, targets),
    ):
        with pytest.raises(ValueError, match=match):
            call()


def test_a_model_that_does_not_return_logits_is_rejected():
    _, images, targets = _tiny()
    with pytest.raises(ValueError, match=r"`model` to return logits of shape \(2, num_classes\)"):
        adversarial_accuracy(nn.Flatten(start_dim=0), images, targets)
    with pytest.raises(ValueError, match="`model` to be a torch.nn.Module .* got function"):
        fgsm(lambda x: x, images, targets, 0.1)
