"""Accuracy under corruption: result structure, aggregation, batching and errors."""

from __future__ import annotations

import pytest
import torch

from tai.corruptions import SEVERITIES, available_corruptions
from tai.robustness import RobustnessResult, corruption_accuracy

N_CLASSES = 3


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
    # Every corruption changes every image, so the exact lookup is always wrong.
    assert all(row == [0.0] * 5 for row in result.accuracy.values())
    assert result.mean_corruption_accuracy == 0.0


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
        pytest.param({"corruptions": ["fog"]}, r"Unknown corruption\(s\) \['fog'\]", id="unknown"),
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
