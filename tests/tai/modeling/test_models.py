"""The project's own models, the naming rules, rebuilding from a config and freezing.

Torchvision architectures: test_models_torchvision.py; pretrained weights:
test_models_pretrained.py; a user's factory: test_models_user.py; fitting images to a
model: test_models_input.py.
"""

import pytest
import torch
import torch.nn.functional as F

from tai.modeling.models import (
    MODEL_API,
    MODEL_NAMES,
    Classifier,
    build_model,
    model_config,
    model_from_config,
    model_kind,
)
from tai.modeling.temperature import TemperatureScaledModel


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_models_map_images_to_logits_through_an_embedding(name, channels):
    model = build_model(name, in_channels=channels, num_classes=4, image_size=28).eval()
    x = torch.rand(2, channels, 28, 28)
    emb = model.embed(x)
    assert emb.shape == (2, model.embedding_dim)
    assert torch.equal(model.head(emb), model(x))
    assert model(x).shape == (2, 4)
    assert (model.num_classes, model.in_channels, model.image_size) == (4, channels, (28, 28))


def test_the_own_models_normalise_to_minus_one_one_inside():
    model = build_model("small_cnn", in_channels=1, num_classes=3).eval()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model.embed(x), model.features((x - 0.5) / 0.5))


def test_state_dicts_hold_only_weights_as_before():
    # The normalisation constants are not saved: weights registered before still load.
    keys = build_model("small_cnn", in_channels=1, num_classes=3).state_dict().keys()
    assert all(k.startswith(("features.", "head.")) for k in keys)
    keys = build_model("resnet18", in_channels=3, num_classes=3, image_size=32).state_dict()
    assert not {"mean", "std"} & set(keys)


def test_build_model_is_seeded():
    a = build_model("small_cnn", in_channels=1, num_classes=3, seed=7)
    b = build_model("small_cnn", in_channels=1, num_classes=3, seed=7)
    c = build_model("small_cnn", in_channels=1, num_classes=3, seed=8)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def test_build_model_leaves_the_global_random_state_alone():
    torch.manual_seed(1)
    expected = torch.rand(1)
    torch.manual_seed(1)
    build_model("small_cnn", in_channels=1, num_classes=3, seed=99)
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"name": "vgg", "in_channels": 1, "num_classes": 3},
            r"unknown model 'vgg'; choose one of small_cnn, resnet18_small, a torchvision "
            r"classification architecture .*'package.module:factory'.*'tai.models' entry point",
        ),
        (
            {"name": "small_cnn", "in_channels": 4, "num_classes": 3},
            "in_channels must be 1 .* or 3 .*, got 4",
        ),
        ({"name": "small_cnn", "in_channels": 1, "num_classes": 1}, "at least 2 classes, got 1"),
        (
            {"name": "small_cnn", "in_channels": 1, "num_classes": 3, "image_size": 3},
            r"model 'small_cnn' cannot take 3x3 images: it needs at least 4x4",
        ),
        (
            {"name": "resnet18_small", "in_channels": 1, "num_classes": 3, "image_size": (28, 6)},
            r"model 'resnet18_small' cannot take 28x6 images: it needs at least 8x8",
        ),
        (
            {"name": "small_cnn", "in_channels": 1, "num_classes": 3, "image_size": (28,)},
            r"`image_size` to be an int or \(height, width\), but got \(28,\)",
        ),
    ],
)
def test_build_model_rejects_bad_arguments(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        build_model(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("small_cnn", "project"),
        ("resnet18_small", "project"),
        ("resnet18", "torchvision"),
        ("vit_b_16", "torchvision"),
        ("my_pkg.nets:factory", "factory"),
    ],
)
def test_model_kind_says_where_a_name_comes_from(name, kind):
    assert model_kind(name) == kind


def test_model_kind_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        model_kind("resnet")


@pytest.mark.parametrize(("name", "size"), [("small_cnn", 16), ("resnet18_small", 16)])
def test_a_model_rebuilds_from_its_config_and_state_dict(name, size):
    model = build_model(name, in_channels=3, num_classes=5, image_size=size, seed=3).eval()
    config = model_config(model)
    assert config == {
        "model": name,
        "factory": None,
        "factory_distribution": None,
        "in_channels": 3,
        "num_classes": 5,
        "image_size": [size, size],
        "model_api": MODEL_API,
        "pretrained": None,
        "pretrained_sha256": None,
    }

    rebuilt = model_from_config({**config, "temperature": 1.5})
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, size, size)
    assert torch.equal(rebuilt.eval()(x), model(x))
    assert model_config(rebuilt) == config


def test_a_config_written_before_torchvision_models_rebuilds_resnet18_small():
    # Such configs said "resnet18" for the CIFAR-stem ResNet and had no model_api.
    old = build_model("resnet18_small", in_channels=1, num_classes=3, seed=1).eval()
    scaled = TemperatureScaledModel(old, 2.0)
    legacy = {"model": "resnet18", "in_channels": 1, "num_classes": 3, "temperature": 2.0}

    rebuilt = TemperatureScaledModel(model_from_config(legacy), 2.0)
    rebuilt.load_state_dict(scaled.state_dict())

    x = torch.rand(2, 1, 12, 12)
    assert torch.equal(rebuilt.eval()(x), scaled(x))
    assert rebuilt.model.name == "resnet18_small"


# --- freezing -----------------------------------------------------------------------------


def _step(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def test_a_frozen_backbone_trains_only_the_head_and_keeps_its_statistics():
    model = build_model("small_cnn", in_channels=1, num_classes=3, freeze_backbone=True)
    backbone = {k: v.clone() for k, v in model.features.state_dict().items()}
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    model.train()  # what Lightning calls every epoch

    assert model.backbone_frozen and not model.features.training and model.training
    assert all(not p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 3, (8,))
    _step(model, x, y)

    for k, v in model.features.state_dict().items():  # weights and batch-norm statistics
        assert torch.equal(v, backbone[k]), k
    assert not torch.equal(model.head.weight, head["weight"])
    # Gradients still reach the input (attacks, saliency maps).
    x.requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unfreezing_trains_the_whole_model_again():
    model = build_model("small_cnn", in_channels=1, num_classes=3, freeze_backbone=True)
    model.unfreeze_backbone()
    model.train()
    before = model.features[0].weight.clone()

    assert not model.backbone_frozen and model.features.training
    assert all(p.requires_grad for p in model.parameters())
    _step(model, torch.rand(8, 1, 16, 16), torch.randint(0, 3, (8,)))
    assert not torch.equal(model.features[0].weight, before)


def test_backbone_and_head_parameters_split_the_model():
    model = build_model("small_cnn", in_channels=1, num_classes=3)
    head = list(model.head_parameters())
    backbone = list(model.backbone_parameters())
    assert len(head) == 2 and len(head) + len(backbone) == len(list(model.parameters()))


def test_a_model_shape_must_name_its_backbone_and_head():
    from tai.modeling.classifier import _TaiModel

    class NoHead(_TaiModel):
        def _backbone(self):
            return self

    with pytest.raises(TypeError, match="_head_parameters"):
        NoHead()
