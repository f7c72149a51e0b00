"""Torchvision architectures by name: head replaced, embedding at the head's input, ImageNet
normalisation and grayscale inside, image sizes refused before anything runs.

Small architectures at small sizes; the ViT (86 M parameters, seconds to initialise on a
CPU) is marked slow.
"""

import pytest
import torch
from torch import nn

from tai.modeling.models import (
    Classifier,
    build_model,
    default_image_size,
    model_config,
    model_from_config,
)
from tai.modeling.torchvision_models import _densenet_key, size_rule

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

FAMILIES = [
    pytest.param("resnet18", 32, "fc", id="resnet18"),
    pytest.param("mobilenet_v3_small", 32, "classifier.3", id="mobilenet_v3_small"),
    pytest.param("efficientnet_b0", 32, "classifier.1", id="efficientnet_b0"),
    pytest.param("shufflenet_v2_x0_5", 40, "fc", id="shufflenet_v2_x0_5"),
]


@pytest.mark.parametrize(("name", "size", "head_name"), FAMILIES)
def test_an_architecture_gets_a_new_head_and_embeds_at_its_input(name, size, head_name):
    model = build_model(name, in_channels=3, num_classes=5, image_size=size).eval()
    x = torch.rand(2, 3, size, size)

    emb = model.embed(x)
    assert isinstance(model, Classifier) and model.name == name
    assert model.native_head_name == head_name
    assert isinstance(model.features.get_submodule(head_name), nn.Identity)
    assert model.head.out_features == 5 and emb.shape == (2, model.head.in_features)
    assert torch.equal(model.head(model.embed(x)), model(x))
    # ImageNet normalisation inside, then the network without its head.
    assert torch.equal(emb, model.features((x - IMAGENET_MEAN) / IMAGENET_STD))


def test_a_grayscale_image_is_repeated_to_the_three_channels_the_architecture_takes():
    model = build_model("resnet18", in_channels=1, num_classes=3, image_size=32).eval()
    gray = torch.rand(2, 1, 32, 32)

    assert model.in_channels == 1 and model.arch_channels == 3
    assert torch.equal(
        model(gray),
        model.head(model.features((gray.expand(-1, 3, -1, -1) - IMAGENET_MEAN) / IMAGENET_STD)),
    )
    assert model.features.conv1.in_channels == 3  # the pretrained stem is untouched


def test_an_architecture_rebuilds_from_its_config():
    model = build_model("mobilenet_v3_small", in_channels=1, num_classes=3, image_size=(32, 48))
    rebuilt = model_from_config(model_config(model))
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 32, 48)
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))
    assert rebuilt.image_size == (32, 48)


@pytest.mark.parametrize(
    ("name", "size", "message"),
    [
        pytest.param(
            "resnet18",
            16,
            r"model 'resnet18' cannot take 16x16 images: it needs at least 32x32 .*"
            r"or use resnet18_small",
            id="resnet-stem",
        ),
        pytest.param("resnet18", (4, 64), "cannot take 4x64 images", id="resnet-one-side"),
        pytest.param("inception_v3", 64, "at least 75x75", id="inception"),
        pytest.param("swin_t", 64, "at least 224x224", id="swin"),
        pytest.param("maxvit_t", 64, "exactly 224x224", id="maxvit"),
        pytest.param("vit_b_16", 40, r"square, a multiple of 16", id="vit-multiple"),
        pytest.param("vit_b_16", (32, 48), r"square, a multiple of 16", id="vit-square"),
    ],
)
def test_an_image_size_the_architecture_cannot_take_is_refused_when_building(name, size, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, in_channels=3, num_classes=3, image_size=size)


def test_an_architecture_without_a_linear_head_is_refused():
    with pytest.raises(ValueError, match=r"'squeezenet1_1' does not end in an nn.Linear"):
        build_model("squeezenet1_1", in_channels=3, num_classes=3, image_size=32)


def test_the_size_rules_follow_the_weights():
    from torchvision.models import ViT_B_16_Weights

    assert size_rule("resnet50").minimum == (32, 32)
    assert size_rule("inception_v3").minimum == (75, 75)
    assert size_rule("vit_b_16").square_multiple == 16
    swag = size_rule("vit_b_16", ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1)
    assert swag.exact and swag.minimum == (384, 384)


def test_densenet_keys_of_old_checkpoints_are_renamed_as_torchvision_does():
    old = "features.denseblock1.denselayer1.norm.1.weight"
    assert _densenet_key(old) == "features.denseblock1.denselayer1.norm1.weight"
    assert _densenet_key("features.conv0.weight") == "features.conv0.weight"


@pytest.mark.slow
def test_a_vision_transformer_is_built_for_the_image_size():
    model = build_model("vit_b_16", in_channels=3, num_classes=4, image_size=32).eval()
    x = torch.rand(1, 3, 32, 32)

    assert model.native_head_name == "heads.head" and model.features.image_size == 32
    assert torch.equal(model.head(model.embed(x)), model(x))
    assert model.embed(x).shape == (1, 768)
    assert model_config(model)["image_size"] == [32, 32]


@pytest.mark.parametrize(
    ("name", "pretrained", "size"),
    [
        ("resnet18", None, (224, 224)),
        ("inception_v3", None, (299, 299)),
        ("swin_v2_t", None, (256, 256)),
        ("vit_b_16", "ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1", (384, 384)),
        ("vit_b_16", "/some/file.pt", (224, 224)),
        ("small_cnn", None, None),
        ("my_pkg.nets:factory", None, None),
    ],
)
def test_the_default_image_size_is_what_the_weights_were_made_for(name, pretrained, size):
    assert default_image_size(name, pretrained) == size
