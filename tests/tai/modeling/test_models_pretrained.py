"""Pretrained weights: a state dict file the test writes, torchvision weights from the local
cache only (TORCH_HOME points at a temporary folder: nothing is downloaded), everything but
the head loaded, the file's sha256 recorded, and every misfit refused by name."""

import hashlib
import os
from pathlib import Path

import pytest
import torch
from torchvision.models import get_model

from tai.modeling import pretrained as pretrained_module
from tai.modeling.models import PretrainedWeightsError, build_model, model_config
from tai.modeling.temperature import TemperatureScaledModel


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def empty_torch_cache(tmp_path, monkeypatch):
    """An empty torch cache: a weights file found there was put there by the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def imagenet_resnet18(tmp_path_factory) -> Path:
    """A torchvision ResNet-18 state dict with its 1000-class head, as torchvision saves it."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "resnet18-imagenet.pth"
    torch.save(get_model("resnet18", weights=None).state_dict(), path)
    return path


def _backbone_equals(model, state: dict, head: str = "fc.") -> bool:
    own = model.state_dict()
    return all(
        torch.equal(own["features." + k], v) for k, v in state.items() if not k.startswith(head)
    )


def test_a_state_dict_file_initialises_everything_but_the_head(imagenet_resnet18):
    state = torch.load(imagenet_resnet18, weights_only=True)
    fresh = build_model("resnet18", in_channels=3, num_classes=4, image_size=32, seed=5)

    model = build_model(
        "resnet18",
        in_channels=3,
        num_classes=4,
        image_size=32,
        seed=5,
        pretrained=imagenet_resnet18,
    )

    assert _backbone_equals(model, state)
    assert model.head.out_features == 4  # the file's 1000-class head is ignored ...
    assert torch.equal(model.head.weight, fresh.head.weight)  # ... the head is the seeded new one
    assert model.pretrained == str(imagenet_resnet18)
    assert model.pretrained_sha256 == _sha256(imagenet_resnet18)
    config = model_config(model)
    assert config["pretrained_sha256"] == _sha256(imagenet_resnet18)
    assert config["pretrained"] == str(imagenet_resnet18)


def test_a_grayscale_model_loads_the_rgb_weights_unchanged(imagenet_resnet18):
    state = torch.load(imagenet_resnet18, weights_only=True)
    model = build_model(
        "resnet18", in_channels=1, num_classes=3, image_size=32, pretrained=imagenet_resnet18
    )
    assert _backbone_equals(model, state)


def test_the_state_dict_of_a_project_model_or_a_registered_model_is_accepted(tmp_path):
    source = build_model("small_cnn", in_channels=1, num_classes=10, seed=1)
    plain, registered = tmp_path / "plain.pt", tmp_path / "state_dict.pt"
    torch.save(source.state_dict(), plain)
    torch.save(TemperatureScaledModel(source, 1.7).state_dict(), registered)

    for path in (plain, registered):
        model = build_model("small_cnn", in_channels=1, num_classes=3, seed=2, pretrained=path)
        assert torch.equal(model.features[0].weight, source.features[0].weight)
        assert model.head.out_features == 3


def test_torchvision_weights_are_read_from_the_local_cache_only(
    empty_torch_cache, imagenet_resnet18
):
    with pytest.raises(PretrainedWeightsError) as caught:
        build_model(
            "resnet18",
            in_channels=3,
            num_classes=3,
            image_size=32,
            pretrained="ResNet18_Weights.IMAGENET1K_V1",
        )

    message = str(caught.value)
    expected = empty_torch_cache / "resnet18-f37072fd.pth"
    assert f"missing file {expected}" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "Nothing is downloaded" in message
    assert not expected.exists()


@pytest.mark.parametrize("spec", ["DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.DEFAULT"])
def test_every_spelling_of_the_weights_finds_the_same_file(empty_torch_cache, spec):
    with pytest.raises(PretrainedWeightsError, match="resnet18-f37072fd.pth"):
        build_model("resnet18", in_channels=3, num_classes=3, pretrained=spec)


def test_a_cached_file_whose_hash_differs_from_its_name_is_refused(
    empty_torch_cache, imagenet_resnet18
):
    empty_torch_cache.mkdir(parents=True)
    (empty_torch_cache / "resnet18-f37072fd.pth").write_bytes(imagenet_resnet18.read_bytes())

    with pytest.raises(
        PretrainedWeightsError,
        match=r"corrupt or not torchvision's: its sha256 .* does not start with f37072fd",
    ):
        build_model("resnet18", in_channels=3, num_classes=3, pretrained="DEFAULT")


def test_a_cached_torchvision_file_is_loaded_and_digested(
    empty_torch_cache, imagenet_resnet18, monkeypatch
):
    # The real file cannot be had offline: a stand-in whose name carries its own hash.
    digest = _sha256(imagenet_resnet18)
    cached = empty_torch_cache / f"resnet18-{digest[:8]}.pth"
    empty_torch_cache.mkdir(parents=True)
    cached.write_bytes(imagenet_resnet18.read_bytes())
    monkeypatch.setattr(pretrained_module, "cached_weights_path", lambda weights: cached)

    model = build_model(
        "resnet18", in_channels=3, num_classes=3, image_size=32, pretrained="IMAGENET1K_V1"
    )

    assert _backbone_equals(model, torch.load(cached, weights_only=True))
    assert model.pretrained == "ResNet18_Weights.IMAGENET1K_V1"
    assert model.pretrained_sha256 == digest


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        pytest.param(
            "resnet18",
            "ResNet50_Weights.IMAGENET1K_V1",
            r"names ResNet50_Weights, but the weights of resnet18 are ResNet18_Weights; "
            r"choose one of ResNet18_Weights.IMAGENET1K_V1, ResNet18_Weights.DEFAULT",
            id="other-architecture",
        ),
        pytest.param(
            "resnet18",
            "IMAGENET1K_V9",
            "ResNet18_Weights has no weights 'IMAGENET1K_V9'",
            id="member",
        ),
        pytest.param(
            "small_cnn", "DEFAULT", "'small_cnn' is not a torchvision architecture", id="own-model"
        ),
        pytest.param(
            "resnet18",
            "/no/such/file.pt",
            r"file '/no/such/file.pt' for resnet18 does not exist",
            id="no-file",
        ),
    ],
)
def test_bad_weight_names_are_refused_with_the_choices(name, spec, message):
    with pytest.raises(PretrainedWeightsError, match=message):
        build_model(name, in_channels=3, num_classes=3, pretrained=spec)


def test_a_file_of_another_architecture_names_the_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "mobilenet.pt"
    torch.save(get_model("mobilenet_v3_small", weights=None).state_dict(), path)

    with pytest.raises(
        PretrainedWeightsError,
        match=r"mobilenet.pt' does not match the architecture: 120 missing keys "
        r"\(features.bn1.bias, .* and 244 unexpected keys \(classifier.0.bias, .*\)",
    ):
        build_model("resnet18", in_channels=3, num_classes=3, pretrained=path)


def test_a_file_of_another_variant_names_the_first_shape_mismatch(tmp_path, imagenet_resnet18):
    state = torch.load(imagenet_resnet18, weights_only=True)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "variant.pt"
    torch.save(state, path)

    with pytest.raises(
        PretrainedWeightsError,
        match=r"features.layer1.0.conv1.weight has shape \(64, 64, 1, 1\) in the file but "
        r"\(64, 64, 3, 3\) in the model",
    ):
        build_model("resnet18", in_channels=3, num_classes=3, pretrained=path)


class _NotWeights:
    pass


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(torch.zeros(3), "is not a state dict .* but Tensor", id="tensor"),
        pytest.param(
            {"a": _NotWeights()},
            r"are not plain weights: they hold Python objects that loading would run",
            id="pickle",
        ),
        pytest.param(
            b"not a torch file",
            r"^Cannot read .* as a state dict with weights_only=True: Unsupported operand 110$",
            id="garbage",
        ),
    ],
)
def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(PretrainedWeightsError, match=message) as refused:
        build_model("small_cnn", in_channels=1, num_classes=3, pretrained=path)
    assert "\n" not in str(refused.value)  # one line for the CLI


class _Exploit:
    """Unpickling this would create a folder (a stand-in for arbitrary code)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_malicious_pickle_is_refused_in_one_line_without_running_it(tmp_path):
    flag = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"features.0.weight": _Exploit(str(flag))}, path)

    with pytest.raises(PretrainedWeightsError) as refused:
        build_model("small_cnn", in_channels=1, num_classes=3, pretrained=path)

    assert not flag.exists()
    assert str(refused.value) == (
        f"the pretrained weights {str(path)!r} ({path}) are not plain weights: they hold "
        f"Python objects that loading would run ({os.mkdir.__module__}.mkdir); refusing to "
        "load them. Use a state dict of tensors from a trusted source, saved with "
        "torch.save(model.state_dict(), path)."
    )


def test_non_finite_weights_are_refused(tmp_path):
    state = build_model("small_cnn", in_channels=1, num_classes=3).state_dict()
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    with pytest.raises(
        PretrainedWeightsError, match=r"NaN or infinite values in features.0.weight"
    ):
        build_model("small_cnn", in_channels=1, num_classes=3, pretrained=path)


def test_a_pretrained_backbone_can_be_frozen(imagenet_resnet18):
    model = build_model(
        "resnet18",
        in_channels=3,
        num_classes=3,
        image_size=32,
        pretrained=imagenet_resnet18,
        freeze_backbone=True,
    )
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]


@pytest.mark.slow
def test_the_auxiliary_heads_of_a_googlenet_file_are_ignored(tmp_path):
    # torchvision's GoogLeNet weights hold aux1/aux2; the model is built without them.
    path = tmp_path / "googlenet.pth"
    torch.save(
        get_model("googlenet", weights=None, aux_logits=True, init_weights=True).state_dict(), path
    )

    model = build_model("googlenet", in_channels=3, num_classes=3, image_size=32, pretrained=path)

    assert not any("aux" in k for k in model.state_dict())
    assert model.pretrained_sha256 == _sha256(path)


def test_a_vit_with_pretrained_weights_needs_the_weights_size_before_any_file():
    with pytest.raises(
        ValueError, match=r"'vit_b_16' cannot take 32x32 images: it needs exactly 224x224"
    ):
        build_model("vit_b_16", in_channels=3, num_classes=3, image_size=32, pretrained="DEFAULT")
    with pytest.raises(ValueError, match=r"it needs exactly 384x384"):
        build_model(
            "vit_b_16",
            in_channels=3,
            num_classes=3,
            image_size=224,
            pretrained="ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1",
        )


@pytest.mark.parametrize(
    ("spec", "is_path"),
    [
        ("DEFAULT", False),
        ("IMAGENET1K_V1", False),
        ("ResNet18_Weights.IMAGENET1K_V1", False),
        ("weights.pt", True),
        ("weights.bin", True),
        ("models/resnet.pth", True),
        (Path("DEFAULT"), True),
    ],
)
def test_a_weights_name_is_told_from_a_path(spec, is_path):
    assert pretrained_module.is_state_dict_path(spec) is is_path
