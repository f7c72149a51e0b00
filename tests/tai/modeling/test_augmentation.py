"""The batched affine augmentation against torchvision's per-image affine."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from tai.modeling.augmentation import AugmentingCollate, BatchRandomAffine, affine_batch


@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (5, 3, 17, 23)])
def test_affine_batch_equals_torchvision_affine_image_by_image(shape):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(shape, generator=g)
    n = shape[0]
    angle = torch.empty(n).uniform_(-30, 30, generator=g)
    translate = torch.randint(-4, 5, (n, 2), generator=g).float()
    scale = torch.empty(n).uniform_(0.7, 1.3, generator=g)

    ours = affine_batch(images, angle, translate, scale)

    for i in range(n):
        reference = TF.affine(
            images[i],
            angle=float(angle[i]),
            translate=[int(translate[i, 0]), int(translate[i, 1])],
            scale=float(scale[i]),
            shear=[0.0, 0.0],
            interpolation=InterpolationMode.NEAREST,
        )
        torch.testing.assert_close(ours[i], reference, atol=0, rtol=0)


def test_affine_batch_with_no_motion_is_the_identity():
    images = torch.rand(3, 2, 9, 12)
    same = affine_batch(images, torch.zeros(3), torch.zeros(3, 2), torch.ones(3))
    torch.testing.assert_close(same, images, atol=0, rtol=0)


def test_batch_random_affine_draws_per_image_within_its_ranges():
    torch.manual_seed(0)
    one = torch.zeros(1, 1, 25, 25)
    one[..., 12, 12] = 1.0  # one bright pixel at the centre: where it lands is the shift
    augment = BatchRandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1))

    moved = augment(one.expand(64, -1, -1, -1).clone())

    landed = [divmod(int(m.flatten().argmax()), 25) for m in moved]
    offsets = {(r - 12, c - 12) for r, c in landed}
    assert len(offsets) > 5  # every image its own draw, not one for the batch
    assert all(abs(dy) <= 2 and abs(dx) <= 2 for dy, dx in offsets)  # 0.08 x 25 = 2 px


def test_collate_stacks_then_augments():
    samples = [(torch.full((1, 4, 4), float(i)), torch.tensor(i)) for i in range(3)]
    images, targets = AugmentingCollate(lambda x: x + 10)(samples)
    assert images.shape == (3, 1, 4, 4) and targets.tolist() == [0, 1, 2]
    assert images[:, 0, 0, 0].tolist() == [10.0, 11.0, 12.0]


@pytest.mark.parametrize(
    ("images", "angle", "message"),
    [
        (torch.rand(2, 4, 4), torch.zeros(2), r"float \(N, C, H, W\) batch"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2), "float"),
        (torch.rand(2, 1, 4, 4), torch.zeros(3), "one angle, scale and"),
    ],
)
def test_affine_batch_rejects_bad_input(images, angle, message):
    with pytest.raises(ValueError, match=message):
        affine_batch(images, angle, torch.zeros(2, 2), torch.ones(2))
