"""The transparency check: explanation quality on a seeded random sample of the split with
bootstrap intervals, nearest-prototype accuracy on held-out images, and only the images
it needs read."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tai.check import EvalContext, sample_indices
from tai.modeling.models import build_model
from tai.principles.transparency.checks import QUALITY_BUDGET, REEXPLAIN_BUDGET, ExplanationCheck
from tai.principles.transparency.explain import deletion_auc, integrated_gradients
from tai.principles.transparency.explanation_quality import (
    insertion_auc,
    randomisation_sanity_check,
)
from tai.principles.transparency.explanations import (
    PER_IMAGE_METRICS,
    REEXPLAINED_METRICS,
    SANITY_THRESHOLD,
    PrototypeSplit,
    explanation_quality,
    held_out_prototypes,
    quality_intervals,
    split_for_prototypes,
)
from tai.principles.transparency.mmd_critic import nearest_prototype_accuracy

N, SIDE, CLASSES = 90, 12, 3
IG_STEPS = 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two threads on two shared cores spin against each other; one is faster here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Loader:
    """``images.__getitem__`` that records every index it is asked for."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.calls: list[list[int]] = []

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        self.calls.append(index.tolist())
        return self.images[index]


def _split_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(N, 1, SIDE, SIDE, generator=g) * 0.7
    targets = torch.arange(N) % CLASSES
    for k in range(CLASSES):  # class k has a bright band: the model has something to use
        images[targets == k, :, 4 * k : 4 * k + 4, :] += 0.3
    return images.clamp(0, 1), targets


def _context(loader: _Loader | None = None, **kwargs) -> EvalContext:
    images, targets = _split_data()
    model = build_model("small_cnn", in_channels=1, num_classes=CLASSES, seed=0).eval()
    with torch.no_grad():
        probs, embeddings = model(images).softmax(1), model.embed(images)
    return EvalContext(
        model=model,
        classes=["a", "b", "c"],
        targets=targets,
        probs=probs,
        embeddings=embeddings,
        load_images=loader or images.__getitem__,
        n_resamples=200,
        **kwargs,
    )


def _run(check: ExplanationCheck, ctx: EvalContext, seed: int = 7):
    return check.run(ctx, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def outcome():
    """The check with a budget of 20 images, run on 90 through a recording loader."""
    images, _ = _split_data()
    loader = _Loader(images)
    ctx = _context(loader)
    check = ExplanationCheck(ig_steps=IG_STEPS, quality_budget=20, batch_size=8)
    result = _run(check, ctx)
    return result, ctx, list(loader.calls), check  # the reads of the check alone


# ------------------------------------------------------------------- the quality sample


def test_quality_is_measured_on_the_seeded_sample_of_the_budgeted_size(outcome):
    result, ctx, _, _ = outcome
    e = result.detail
    generator = torch.Generator().manual_seed(7)
    torch.randint(2**31 - 1, (1,), generator=generator)  # the check's first draw: its seed
    expected = ctx.sample(20, generator)

    assert e.quality_sample.indices == expected.tolist()
    assert len(e.quality_sample) == 20 == result.section["explanations"]["quality_sample"]["size"]
    assert set(e.quality_sample.indices) != set(e.indices)  # not the prototypes
    for name in PER_IMAGE_METRICS:
        assert e.quality_sample.values[name].shape == (20,), name


def test_quality_metrics_are_the_means_over_the_sample(outcome):
    result, ctx, _, _ = outcome
    index = torch.tensor(result.detail.quality_sample.indices)
    x, y = ctx.images(index), ctx.targets[index]
    maps = integrated_gradients(ctx.model, x, y, n_steps=IG_STEPS).maps

    deletion = deletion_auc(ctx.model, x, maps, y).auc
    insertion = insertion_auc(ctx.model, x, maps, y).auc
    assert result.values["deletion_auc"] == pytest.approx(float(deletion.mean()))
    assert result.values["insertion_auc"] == pytest.approx(float(insertion.mean()))
    for name in PER_IMAGE_METRICS:
        assert result.values[name] == pytest.approx(
            float(result.detail.quality_sample.values[name].mean())
        )


def test_the_sample_is_at_most_the_split_and_the_budget_is_an_argument():
    result = _run(ExplanationCheck(ig_steps=IG_STEPS, quality_budget=500), _context())
    assert result.detail.quality_sample.indices == list(range(N))
    assert ExplanationCheck().quality_budget == QUALITY_BUDGET
    with pytest.raises(ValueError, match="quality_budget must be at least 1, got 0"):
        ExplanationCheck(quality_budget=0)


def test_quality_metrics_have_bounds_that_contain_them(outcome):
    result, *_ = outcome
    specs = {s.name: s for s in ExplanationCheck().metric_specs()}
    assert set(result.bounds) == set(PER_IMAGE_METRICS)
    for name in PER_IMAGE_METRICS:
        assert specs[name].bounded, name
        lower, upper = result.bounds[name]
        assert lower <= result.values[name] <= upper, name
    lower, upper = result.bounds["deletion_auc"]
    assert 0.0 <= lower < upper <= 1.0  # twenty different images: a real interval
    section = result.section["explanations"]
    assert section["quality_bounds"]["deletion_auc"] == [lower, upper]
    assert section["quality_sample"]["n_resamples"] == 200
    for name in ("ig_convergence_delta", "nearest_prototype_accuracy", "sanity_failures"):
        assert not specs[name].bounded, name


def test_bounds_are_at_the_context_confidence():
    narrow = _run(ExplanationCheck(ig_steps=IG_STEPS, quality_budget=20), _context(confidence=0.5))
    wide = _run(ExplanationCheck(ig_steps=IG_STEPS, quality_budget=20), _context(confidence=0.99))
    assert narrow.values == wide.values  # same sample: the level changes only the bounds
    (nl, nu), (wl, wu) = narrow.bounds["deletion_auc"], wide.bounds["deletion_auc"]
    assert wl < nl and nu < wu


def test_the_check_is_reproducible_from_its_generator():
    check = ExplanationCheck(ig_steps=IG_STEPS, quality_budget=12)
    first, again = _run(check, _context()), _run(check, _context())
    other = _run(check, _context(), seed=8)
    assert first.values == again.values and first.bounds == again.bounds
    assert first.detail.quality_sample.indices != other.detail.quality_sample.indices


def test_sanity_failures_count_the_methods_at_or_above_the_threshold(outcome):
    result, *_ = outcome
    e = result.detail
    failing = [m for m, s in e.sanity.items() if s["mean_correlation"] >= 0.5]
    assert result.values["sanity_failures"] == len(failing)
    for m, s in e.sanity.items():
        assert s["mean_correlation"] == result.values[f"sanity_{m}_correlation"]


def test_the_metrics_that_explain_again_are_measured_on_a_seeded_subset_of_the_sample():
    check = ExplanationCheck(ig_steps=IG_STEPS, quality_budget=20, reexplain_budget=8)
    ctx = _context()
    result = _run(check, ctx)
    sample = result.detail.quality_sample
    generator = torch.Generator().manual_seed(7)
    torch.randint(2**31 - 1, (1,), generator=generator)
    quality = ctx.sample(20, generator)
    split_for_prototypes(ctx.targets, generator, min_selection=2)
    expected = quality[sample_indices(20, 8, generator)]

    assert sample.reexplained == expected.tolist()
    assert set(sample.reexplained) < set(sample.indices)
    for name in PER_IMAGE_METRICS:
        size = 8 if name in REEXPLAINED_METRICS else 20
        assert sample.values[name].shape == (size,), name
        lower, upper = result.bounds[name]
        assert lower <= result.values[name] <= upper, name
    assert "sensitivity" in REEXPLAINED_METRICS and "deletion_auc" not in REEXPLAINED_METRICS
    section = result.section["explanations"]["quality_sample"]
    assert (section["size"], section["reexplained_size"]) == (20, 8)
    assert section["reexplained_indices"] == expected.tolist()
    assert section["reexplain_budget"] == 8
    assert ExplanationCheck().reexplain_budget == REEXPLAIN_BUDGET
    with pytest.raises(ValueError, match="reexplain_budget must be at least 1, got 0"):
        ExplanationCheck(reexplain_budget=0)


def test_a_re_explained_image_has_the_values_it_has_when_every_image_is_re_explained():
    # The subset's values are those of the same images measured alone: nothing of the
    # other images leaks in, and the first loop's values do not depend on the subset.
    ctx = _context()
    index = torch.arange(0, 40, 3)
    sub = index[[1, 4, 6]]
    kwargs = {"n_steps": IG_STEPS, "seed": 3, "batch_size": 8}
    part = explanation_quality(
        ctx.model, ctx.images, ctx.targets, index, reexplain_index=sub, **kwargs
    )
    alone = explanation_quality(ctx.model, ctx.images, ctx.targets, sub, **kwargs)
    whole = explanation_quality(ctx.model, ctx.images, ctx.targets, index, **kwargs)
    assert part.reexplained == sub.tolist() and whole.reexplained == index.tolist()
    for name in PER_IMAGE_METRICS:
        if name in REEXPLAINED_METRICS:
            torch.testing.assert_close(part.values[name], alone.values[name])
        else:
            torch.testing.assert_close(part.values[name], whole.values[name])


def test_the_randomisation_check_reuses_the_first_loops_maps_to_the_same_correlations():
    # The quality loop's Integrated Gradients maps stand for the trained model's maps of
    # the re-explained images; the check that computes them itself gives the same values.
    ctx = _context()
    index, sub = torch.arange(0, 40, 3), torch.tensor([3, 12, 30])
    part = explanation_quality(
        ctx.model,
        ctx.images,
        ctx.targets,
        index,
        reexplain_index=sub,
        n_steps=IG_STEPS,
        seed=3,
        batch_size=8,
    )
    direct = randomisation_sanity_check(
        ctx.model,
        ctx.images(sub),
        ctx.targets[sub],
        method="integrated_gradients",
        seed=3,
        n_steps=IG_STEPS,
        threshold=SANITY_THRESHOLD,
        batch_size=8,
    )
    torch.testing.assert_close(
        part.values["sanity_integrated_gradients_correlation"],
        direct.correlations.double(),
        atol=1e-6,
        rtol=0,
    )


@pytest.mark.parametrize("sub", [[], [1, 2]], ids=["empty", "outside"])
def test_a_re_explained_subset_outside_the_sample_is_refused(sub):
    ctx = _context()
    with pytest.raises(ValueError, match="reexplain_index must be a non-empty subset of index"):
        explanation_quality(
            ctx.model,
            ctx.images,
            ctx.targets,
            torch.tensor([0, 2, 4]),
            reexplain_index=torch.tensor(sub, dtype=torch.long),
            n_steps=IG_STEPS,
        )


# ---------------------------------------------------------------------- the intervals


def test_quality_intervals_match_the_normal_interval_of_a_large_sample():
    values = torch.randn(4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    lower, upper = quality_intervals({"x": values}, confidence=0.95, n_resamples=2000, generator=g)[
        "x"
    ]
    half = 1.959964 * float(values.std()) / math.sqrt(len(values))
    assert (lower + upper) / 2 == pytest.approx(float(values.mean()), abs=0.1 * half)
    assert (upper - lower) / 2 == pytest.approx(half, rel=0.1)


def test_quality_intervals_resample_the_same_images_for_every_metric():
    values = torch.rand(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bounds = quality_intervals(
        {"a": values, "b": 2 * values + 1, "c": torch.full((50,), 0.25)},
        n_resamples=300,
        generator=torch.Generator().manual_seed(0),
    )
    assert bounds["b"] == pytest.approx(tuple(2 * v + 1 for v in bounds["a"]))
    assert bounds["c"] == pytest.approx((0.25, 0.25))


def test_quality_intervals_are_nan_for_a_non_finite_value():
    bounds = quality_intervals({"x": torch.tensor([0.1, math.nan, 0.3])}, n_resamples=10)
    assert all(math.isnan(b) for b in bounds["x"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": 1.5}, "confidence"),
        ({"n_resamples": 0}, "n_resamples must be at least 1, got 0"),
        ({"values": {"a": torch.ones(3), "b": torch.ones(4)}}, "same positive number"),
        ({"values": {}}, "same positive number"),
    ],
)
def test_quality_intervals_reject_bad_arguments(kwargs, message):
    arguments = {"values": {"a": torch.ones(3)}, **kwargs}
    with pytest.raises(ValueError, match=message):
        quality_intervals(**arguments)


# ---------------------------------------------------------- held-out nearest prototypes


def test_nearest_prototype_accuracy_is_scored_on_held_out_images():
    # Class 0 at 0 and 0.2 in the selection half; class 1 at 2 and 2.2. A held-out image
    # of class 1 at 0.8 lies nearer class 0's prototype.
    embeddings = torch.tensor([[0.0], [0.2], [2.0], [2.2], [0.9], [0.8]])
    targets = torch.tensor([0, 0, 1, 1, 0, 1])
    split = PrototypeSplit(torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5]))

    pc, held_out = held_out_prototypes(embeddings, targets, split, n_prototypes=1)

    protos = [pc.prototypes[0][0], pc.prototypes[1][0]]
    assert set(protos) <= {0, 1, 2, 3}
    # On the selection half itself (the old scheme) the prototypes look perfect...
    in_sample = nearest_prototype_accuracy(
        embeddings[:4], targets[:4], embeddings[protos], targets[protos]
    )
    assert in_sample == 1.0
    # ...on the held-out images they are not.
    assert held_out == 0.5


def test_held_out_prototypes_refuse_overlapping_or_empty_halves():
    embeddings, targets = torch.rand(6, 2), torch.tensor([0, 0, 0, 1, 1, 1])
    overlap = PrototypeSplit(torch.tensor([0, 1, 3, 4]), torch.tensor([1, 5]))
    with pytest.raises(ValueError, match="share images"):
        held_out_prototypes(embeddings, targets, overlap)
    with pytest.raises(ValueError, match="need images, got 6 and 0"):
        held_out_prototypes(embeddings, targets, PrototypeSplit(torch.arange(6), torch.arange(0)))


def test_the_split_halves_each_class_at_random():
    targets = torch.tensor([0] * 7 + [1] * 4 + [2] * 2)
    split = split_for_prototypes(targets, torch.Generator().manual_seed(0), min_selection=1)
    selection, scoring = set(split.selection.tolist()), set(split.scoring.tolist())
    assert not selection & scoring and selection | scoring == set(range(13))
    counts = [
        (int((targets[split.selection] == c).sum()), int((targets[split.scoring] == c).sum()))
        for c in range(3)
    ]
    assert counts == [(4, 3), (2, 2), (1, 1)]
    other = split_for_prototypes(targets, torch.Generator().manual_seed(1), min_selection=1)
    assert not torch.equal(other.selection, split.selection)


def test_the_split_names_a_class_too_small_for_its_prototypes():
    targets = torch.tensor([0] * 5 + [1] * 2)
    with pytest.raises(ValueError, match="class 1 has 2 images in the split but needs 3"):
        split_for_prototypes(targets, torch.Generator().manual_seed(0), min_selection=2)


def test_the_check_scores_nearest_prototypes_on_the_other_half(outcome):
    result, ctx, _, _ = outcome
    e = result.detail
    selection, scoring = e.split.selection, e.split.scoring
    assert not set(selection.tolist()) & set(scoring.tolist())
    assert sorted(selection.tolist() + scoring.tolist()) == list(range(N))
    shown = [
        i for c in e.prototype_indices for i in e.prototype_indices[c] + e.criticism_indices[c]
    ]
    assert set(shown) <= set(selection.tolist())
    protos = torch.tensor([i for c in sorted(e.prototype_indices) for i in e.prototype_indices[c]])
    expected = nearest_prototype_accuracy(
        ctx.embeddings[scoring],
        ctx.targets[scoring],
        ctx.embeddings[protos],
        ctx.targets[protos],
    )
    assert result.values["nearest_prototype_accuracy"] == pytest.approx(expected)
    section = result.section["explanations"]["nearest_prototype"]
    assert (section["selection_size"], section["scoring_size"]) == (45, 45)


# ---------------------------------------------------------------- only the images needed


def test_only_the_images_the_check_needs_are_read(outcome):
    result, _, calls, check = outcome
    e = result.detail
    needed = set(e.quality_sample.indices) | set(e.indices)
    for c in e.prototype_indices:
        needed |= set(e.prototype_indices[c]) | set(e.criticism_indices[c])
        needed |= set(e.class_mean_indices[c])
    read = {i for call in calls for i in call}
    assert read == needed
    assert len(read) < N
    assert max(len(call) for call in calls) <= max(check.batch_size, 16, 2 * CLASSES)


def test_the_report_keeps_the_prototypes_gallery_and_maps(outcome):
    result, ctx, _, _ = outcome
    e = result.detail
    assert sorted(e.labels) == [0, 1, 2]
    assert e.images.shape == e.attributions.shape == (3, 1, SIDE, SIDE)
    torch.testing.assert_close(e.images, ctx.images(torch.tensor(e.indices)))
    for c in (0, 1, 2):
        protos, crits = e.gallery[c]
        torch.testing.assert_close(protos, ctx.images(torch.tensor(e.prototype_indices[c])))
        torch.testing.assert_close(crits, ctx.images(torch.tensor(e.criticism_indices[c])))
        assert len(e.class_mean_indices[c]) == 16
        assert all(int(ctx.targets[i]) == c for i in e.class_mean_indices[c])
    assert e.class_mean_maps.shape == (3, 1, SIDE, SIDE)
    assert set(e.method_maps) == {"integrated_gradients", "saliency", "gradcam", "occlusion"}
    section = result.section["explanations"]
    assert section["prototype_labels"] == ["a", "b", "c"]
    assert len(section["deletion_auc"]) == len(section["convergence_delta"]) == 3
    assert set(section["sanity_check"]) == set(e.method_maps)
    assert np.isfinite(result.values["ig_convergence_delta"])


def test_the_class_mean_maps_pass_at_most_the_batch_size_through_the_model():
    """Integrated Gradients of the class means (16 images a class) and of the prototypes
    ran 64 images (examples x steps) a pass whatever the batch size: their gradients
    through large images dominated the check's memory. Now ``batch_size`` bounds a pass."""
    from tai.principles.transparency.explanations import _class_means

    ctx = _context()
    sizes: list[int] = []
    hook = ctx.model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        maps, picked = _class_means(
            ctx.model, ctx.images, ctx.targets, [0, 1, 2], 16, 8, 0, batch_size=16
        )
    finally:
        hook.remove()
    assert maps.shape[0] == 3 and all(len(p) == 16 for p in picked.values())
    assert sizes and max(sizes) <= 16, sorted(set(sizes))


def test_the_class_means_reuse_the_quality_samples_maps_and_stay_the_mean_of_their_images():
    from tai.principles.transparency.explanations import _class_means

    ctx = _context()
    quality = torch.arange(0, 90, 5)  # 18 images of the split, about 6 a class
    known = dict(
        zip(
            quality.tolist(),
            integrated_gradients(
                ctx.model, ctx.images(quality), ctx.targets[quality], n_steps=8
            ).maps,
            strict=True,
        )
    )
    read: list[int] = []

    def load(index):
        read.extend(index.tolist())
        return ctx.images(index)

    maps, picked = _class_means(ctx.model, load, ctx.targets, [0, 1, 2], 16, 8, 0, known=known)
    for c in (0, 1, 2):
        mine = [i for i in quality.tolist() if int(ctx.targets[i]) == c]
        assert picked[c][: len(mine)] == mine  # the known images first
        assert len(picked[c]) == len(set(picked[c])) == 16
        assert all(int(ctx.targets[i]) == c for i in picked[c])
        index = torch.tensor(picked[c])
        fresh = integrated_gradients(ctx.model, ctx.images(index), ctx.targets[index], n_steps=8)
        torch.testing.assert_close(maps[c], fresh.maps.mean(0), atol=1e-6, rtol=1e-5)
    assert sorted(read) == sorted(set(sum(picked.values(), [])) - set(quality.tolist()))


def test_the_whole_check_passes_at_most_the_batch_size_through_the_model():
    """At 224x224 the quality sample's forward passes held the check's memory: deletion
    and insertion ran up to 128 images a pass (images x steps), infidelity and
    max-sensitivity all their perturbed copies, occlusion up to 256 occluded copies,
    whatever ``batch_size``. Now every pass of the check, through the model and its
    randomised copy (the hook is copied with it), holds at most ``batch_size`` images."""
    ctx = _context()
    sizes: list[int] = []
    hook = ctx.model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        result = _run(ExplanationCheck(ig_steps=IG_STEPS, quality_budget=20, batch_size=8), ctx)
    finally:
        hook.remove()
    assert len(result.detail.quality_sample.indices) == 20
    quality = ("deletion_auc", "insertion_auc", "infidelity", "sensitivity", "sanity_failures")
    assert all(np.isfinite(result.values[name]) for name in quality)
    assert len(sizes) > 100 and max(sizes) <= 8, sorted(set(sizes))
