"""Accuracy under corruption: result structure, aggregation, batching and errors."""

from __future__ import annotations

import pytest
import torch

from tai.principles.reliability.corruptions import (
    DEFAULT_CORRUPTIONS,
    SEVERITIES,
    available_corruptions,
)
from tai.principles.reliability.robustness import (
    CorruptionErrors,
    RobustnessResult,
    corruption_accuracy,
    corruption_errors,
)

N_CLASSES = 3


@pytest.fixture(autouse=True)
def _one_thread():
    """Two threads on a shared, busy machine run these small tensors several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(24, 3, 8, 8, generator=g)
    target = torch.arange(24) % N_CLASSES
    return images, target


def _exact_lookup(images: torch.Tensor, target: torch.Tensor):
    """Right only on the exact clean images; anything else gets an extra, never-true class."""
    unknown = N_CLASSES

    def predict(x: torch.Tensor) -> torch.Tensor:
        match = (x.flatten(1)[:, None, :] == images.flatten(1)[None, :, :]).all(dim=2)
        labels = torch.where(match.any(dim=1), target[match.float().argmax(dim=1)], unknown)
        return torch.nn.functional.one_hot(labels, N_CLASSES + 1).float()

    return predict


def _nearest_neighbour(images: torch.Tensor, target: torch.Tensor):
    """1-NN on the clean images: perfect when clean, wrong more often as corruption grows."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        nearest = torch.cdist(x.flatten(1), images.flatten(1)).argmin(dim=1)
        return torch.nn.functional.one_hot(target[nearest], N_CLASSES).float()

    return predict


def test_perfect_clean_model_gives_one_row_per_corruption_and_one_cell_per_severity(dataset):
    images, target = dataset
    result = corruption_accuracy(_exact_lookup(images, target), images, target)
    assert isinstance(result, RobustnessResult)
    assert result.clean_accuracy == 1.0
    assert result.severities == SEVERITIES
    assert list(result.accuracy) == available_corruptions()
    # Every corruption changes every image, so the exact lookup is always wrong; except
    # spatter, which leaves an 8 x 8 image without liquid drops untouched.
    assert all(row == [0.0] * 5 for name, row in result.accuracy.items() if name != "spatter")
    assert all(0.0 <= a <= 1.0 for a in result.accuracy["spatter"])


def test_accuracy_is_the_fraction_of_correct_predictions_in_every_cell(dataset):
    images, _ = dataset
    target = torch.tensor([0] * 9 + [1] * 15)

    def always_class_zero(x):
        return torch.tensor([1.0, 0.0]).expand(len(x), 2)

    result = corruption_accuracy(always_class_zero, images, target, batch_size=7)
    assert result.clean_accuracy == 9 / 24
    assert all(row == [9 / 24] * 5 for row in result.accuracy.values())


def test_selected_corruptions_and_severities_are_kept_in_order(dataset):
    images, target = dataset
    result = corruption_accuracy(
        _nearest_neighbour(images, target),
        images,
        target,
        corruptions=["contrast", "gaussian_noise"],
        severities=[5, 1],
    )
    assert list(result.accuracy) == ["contrast", "gaussian_noise"]
    assert result.severities == (5, 1)
    assert all(len(row) == 2 for row in result.accuracy.values())
    assert all(0.0 <= a <= 1.0 for row in result.accuracy.values() for a in row)


def test_mean_corruption_accuracy_is_the_mean_of_all_cells(dataset):
    images, target = dataset
    result = corruption_accuracy(_nearest_neighbour(images, target), images, target)
    cells = [a for row in result.accuracy.values() for a in row]
    assert len(cells) == len(available_corruptions()) * 5
    assert len(set(cells)) > 1  # the check below is not trivially true
    assert result.mean_corruption_accuracy == pytest.approx(sum(cells) / len(cells))


def test_as_dict_has_flat_scalar_keys_per_cell_and_per_corruption():
    result = RobustnessResult(
        clean_accuracy=0.9,
        accuracy={"contrast": [0.8, 0.6], "gaussian_noise": [0.5, 0.1]},
        severities=(1, 3),
    )
    assert result.mean_corruption_accuracy == pytest.approx(0.5)
    assert result.as_dict() == pytest.approx(
        {
            "clean_accuracy": 0.9,
            "mean_corruption_accuracy": 0.5,
            "contrast_s1": 0.8,
            "contrast_s3": 0.6,
            "contrast_mean": 0.7,
            "gaussian_noise_s1": 0.5,
            "gaussian_noise_s3": 0.1,
            "gaussian_noise_mean": 0.3,
        }
    )


def test_batch_size_does_not_change_the_result(dataset):
    images, target = dataset
    predict = _nearest_neighbour(images, target)
    names = ["gaussian_noise", "impulse_noise", "gaussian_blur"]
    results = [
        corruption_accuracy(predict, images, target, corruptions=names, batch_size=b, seed=3)
        for b in (1, 5, 256)
    ]
    assert results[0] == results[1] == results[2]


def test_seed_makes_random_corruptions_reproducible(dataset):
    images, target = dataset
    predict = _nearest_neighbour(images, target)
    run = [
        corruption_accuracy(predict, images, target, corruptions=["gaussian_noise"], seed=7)
        for _ in range(2)
    ]
    assert run[0] == run[1]


def test_predict_sees_bounded_batches_without_gradients(dataset):
    images, target = dataset
    seen: list[tuple[int, bool]] = []
    inner = _nearest_neighbour(images, target)

    def predict(x):
        seen.append((len(x), torch.is_grad_enabled()))
        return inner(x)

    corruption_accuracy(predict, images, target, corruptions=["contrast"], batch_size=10)
    assert [size for size, _ in seen] == [10, 10, 4] * 6  # clean + 5 severities
    assert not any(grad for _, grad in seen)


# --------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"corruptions": ["rain"]}, r"Unknown corruption\(s\) \['rain'\]", id="unknown"
        ),
        pytest.param({"corruptions": []}, "at least one corruption", id="empty"),
        pytest.param(
            {"corruptions": "contrast"}, r"Wrap it in a list: \['contrast'\]", id="string"
        ),
        pytest.param(
            {"corruptions": ["contrast", "contrast"]}, "distinct corruption", id="duplicate"
        ),
        pytest.param({"severities": [0, 1]}, r"integers from \(1, 2, 3, 4, 5\)", id="severity-0"),
        pytest.param({"severities": []}, "non-empty sequence", id="no-severity"),
        pytest.param({"severities": [2, 2]}, "distinct severities", id="duplicate-severity"),
        pytest.param(
            {"batch_size": 0}, r"`batch_size` to be an integer >= 1, but got 0", id="batch-0"
        ),
    ],
)
def test_invalid_arguments_are_rejected(dataset, kwargs, message):
    images, target = dataset
    with pytest.raises(ValueError, match=message):
        corruption_accuracy(_nearest_neighbour(images, target), images, target, **kwargs)


def test_one_target_per_image_is_required(dataset):
    images, target = dataset
    with pytest.raises(ValueError, match="24 images and 23 targets"):
        corruption_accuracy(_nearest_neighbour(images, target), images, target[:-1])


def test_target_must_hold_integer_class_indices(dataset):
    images, target = dataset
    with pytest.raises(ValueError, match="integer class indices.*target.long"):
        corruption_accuracy(_nearest_neighbour(images, target), images, target.float())


def test_target_must_be_one_dimensional(dataset):
    images, target = dataset
    with pytest.raises(ValueError, match=r"`target` of shape \(N,\)"):
        corruption_accuracy(_nearest_neighbour(images, target), images, target[:, None])


def test_images_are_checked_before_the_model_runs(dataset):
    images, target = dataset
    with pytest.raises(ValueError, match=r"in \[0, 1\].*before normalisation"):
        corruption_accuracy(_nearest_neighbour(images, target), images * 2 - 1, target)


def test_predict_must_return_logits_per_image(dataset):
    images, target = dataset
    with pytest.raises(ValueError, match=r"logits of shape \(24, num_classes\).*got \(24,\)"):
        corruption_accuracy(lambda x: torch.zeros(len(x)), images, target)


# ------------------------------------------------------------- corruption errors (CE)


def _result(clean: float, accuracy: dict[str, list[float]], severities=(1, 2, 3)):
    return RobustnessResult(clean_accuracy=clean, accuracy=accuracy, severities=severities)


def test_ce_is_the_models_summed_error_over_the_baselines():
    model = _result(0.9, {"fog": [0.8, 0.7, 0.6], "snow": [0.9, 0.5, 0.1]})
    baseline = _result(0.8, {"fog": [0.6, 0.5, 0.4], "snow": [0.5, 0.5, 0.5]})
    errors = corruption_errors(model, baseline)
    assert isinstance(errors, CorruptionErrors)
    # fog: (.2 + .3 + .4) / (.4 + .5 + .6); snow: (.1 + .5 + .9) / (.5 + .5 + .5)
    assert errors.ce == pytest.approx({"fog": 0.9 / 1.5, "snow": 1.5 / 1.5})
    assert errors.mce == pytest.approx((0.6 + 1.0) / 2)


def test_relative_ce_subtracts_each_models_clean_error_at_every_severity():
    model = _result(0.9, {"fog": [0.8, 0.7, 0.6], "snow": [0.9, 0.5, 0.1]})
    baseline = _result(0.8, {"fog": [0.6, 0.5, 0.4], "snow": [0.5, 0.5, 0.5]})
    errors = corruption_errors(model, baseline)
    # fog: (.9 - 3 * .1) / (1.5 - 3 * .2); snow: (1.5 - 3 * .1) / (1.5 - 3 * .2)
    assert errors.relative_ce == pytest.approx({"fog": 0.6 / 0.9, "snow": 1.2 / 0.9})
    assert errors.relative_mce == pytest.approx((0.6 / 0.9 + 1.2 / 0.9) / 2)


def test_a_model_compared_with_itself_has_ce_one():
    result = _result(0.95, {"fog": [0.9, 0.6, 0.3], "snow": [0.7, 0.7, 0.2]})
    errors = corruption_errors(result, result)
    assert errors.mce == pytest.approx(1.0) and errors.relative_mce == pytest.approx(1.0)
    assert list(errors.ce.values()) == pytest.approx([1.0, 1.0])


def test_the_order_of_corruptions_and_severities_does_not_matter():
    model = _result(0.9, {"fog": [0.8, 0.7, 0.6], "snow": [0.9, 0.5, 0.1]})
    reordered = _result(0.8, {"snow": [0.4, 0.5, 0.6], "fog": [0.2, 0.5, 0.6]}, (3, 2, 1))
    same = _result(0.8, {"fog": [0.6, 0.5, 0.2], "snow": [0.6, 0.5, 0.4]})
    assert corruption_errors(model, reordered) == corruption_errors(model, same)
    assert list(corruption_errors(model, reordered).ce) == ["fog", "snow"]


def test_errors_as_dict_has_flat_scalar_keys():
    model = _result(0.9, {"fog": [0.8, 0.7, 0.6]})
    baseline = _result(0.8, {"fog": [0.6, 0.5, 0.4]})
    assert corruption_errors(model, baseline).as_dict() == pytest.approx(
        {"mce": 0.6, "relative_mce": 0.6 / 0.9, "ce_fog": 0.6, "relative_ce_fog": 0.6 / 0.9}
    )


def test_errors_of_two_evaluated_models(dataset):
    images, target = dataset

    def blurry(x):  # the nearest neighbour of a blurred copy: a worse model under noise
        return _nearest_neighbour(images, target)(torch.nn.functional.avg_pool2d(x, 3, 1, 1))

    kwargs = {"corruptions": list(DEFAULT_CORRUPTIONS), "seed": 1}
    good = corruption_accuracy(_nearest_neighbour(images, target), images, target, **kwargs)
    bad = corruption_accuracy(blurry, images, target, **kwargs)
    errors = corruption_errors(good, bad)
    assert set(errors.ce) == set(DEFAULT_CORRUPTIONS)
    assert errors.mce < 1.0


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        pytest.param(
            _result(0.8, {"fog": [0.5] * 3, "rain": [0.5] * 3}),
            r"same corruptions, but only the model has \['snow'\] and only the baseline has "
            r"\['rain'\]",
            id="corruptions-differ",
        ),
        pytest.param(
            _result(0.8, {"fog": [0.5, 0.5], "snow": [0.5, 0.5]}, (1, 5)),
            r"same severities, but got \(1, 2, 3\) and \(1, 5\)",
            id="severities-differ",
        ),
        pytest.param(
            _result(1.0, {"fog": [1.0] * 3, "snow": [0.5] * 3}),
            r"baseline makes no error on 'fog' .* summed error is 0",
            id="perfect-baseline",
        ),
        pytest.param(
            _result(0.6, {"fog": [0.5] * 3, "snow": [0.7] * 3}),
            r"baseline's error on 'snow' does not exceed its clean error \(sum .* = -0\.3\)",
            id="baseline-not-degraded",
        ),
        pytest.param(
            _result(0.8, {"fog": [0.5] * 2, "snow": [0.5] * 3}),
            r"`baseline` has 2 accuracies for 'fog' but 3 severities",
            id="ragged",
        ),
        pytest.param({"fog": [0.5] * 3}, r"`baseline` to be a RobustnessResult .* dict", id="dict"),
    ],
)
def test_incomparable_or_degenerate_baselines_are_rejected(baseline, message):
    model = _result(0.9, {"fog": [0.8, 0.7, 0.6], "snow": [0.9, 0.5, 0.1]})
    with pytest.raises(ValueError, match=message):
        corruption_errors(model, baseline)
