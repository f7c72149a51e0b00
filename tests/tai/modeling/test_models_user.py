"""A user's own model: a factory by import path or by an installed ``tai.models`` entry point,
its embedding taken from ``embed`` or from the input of its final ``nn.Linear``, and every
broken contract refused with the factory's name and what to do."""

from __future__ import annotations

import textwrap

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from tai.modeling.models import (
    Classifier,
    EmbeddingClassifier,
    build_model,
    model_code_paths,
    model_config,
    model_from_config,
)
from tai.modeling.user_models import ENTRY_POINT_GROUP

HERE = __name__


# --- factories (module level, so that "tests....:name" imports them) -------------------


def tiny_mlp(*, num_classes, in_channels, image_size):
    """No embed method: the embedding is the input of the last nn.Linear."""
    h, w = image_size
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * h * w, 8), nn.ReLU(), nn.Linear(8, num_classes)
    )


class TinyEmbedder(nn.Module):
    """Has its own embed (a 6-d embedding), and a head."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.fc = nn.Linear(6, num_classes)

    def embed(self, x):
        return self.body(x).flatten(1)

    def forward(self, x):
        return self.fc(self.embed(x))


def tiny_embedder(*, num_classes, in_channels, image_size):
    return TinyEmbedder(num_classes, in_channels)


class TinyLightning(pl.LightningModule):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.out(self.pool(torch.relu(self.conv(x))).flatten(1))


def tiny_lightning(*, num_classes, in_channels, image_size):
    return TinyLightning(num_classes, in_channels)


def wrong_arguments(num_classes, channels):
    return nn.Linear(2, num_classes)


def failing(*, num_classes, in_channels, image_size):
    raise RuntimeError("no GPU here")


def not_a_module(*, num_classes, in_channels, image_size):
    return {"weights": 1}


def no_linear(*, num_classes, in_channels, image_size):
    return nn.Sequential(
        nn.Conv2d(in_channels, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def wrong_last_linear(*, num_classes, in_channels, image_size):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size[0] * image_size[1], 7))


class _Doubled(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1)) * 2  # something after the head


def head_not_last(*, num_classes, in_channels, image_size):
    return _Doubled(in_channels * image_size[0] * image_size[1], num_classes)


class _TupleOut(TinyEmbedder):
    def forward(self, x):
        return self.fc(self.embed(x)), self.embed(x)


def returns_a_tuple(*, num_classes, in_channels, image_size):
    return _TupleOut(num_classes, in_channels)


class _MapEmbedding(TinyEmbedder):
    def embed(self, x):
        return self.body[:2](x)  # (N, 6, H, W): not flattened

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


def embeds_a_map(*, num_classes, in_channels, image_size):
    return _MapEmbedding(num_classes, in_channels)


def ignores_the_size(*, num_classes, in_channels, image_size):
    return tiny_mlp(num_classes=num_classes, in_channels=in_channels, image_size=(4, 4))


NOT_CALLABLE = [1, 2]


# --- building ------------------------------------------------------------------------------


def test_a_factory_by_path_without_embed_is_split_at_its_last_linear():
    model = build_model(f"{HERE}:tiny_mlp", in_channels=1, num_classes=3, image_size=(6, 5)).eval()
    x = torch.rand(4, 1, 6, 5)

    assert isinstance(model, Classifier) and model.native_head_name == "3"
    assert model.embed(x).shape == (4, 8) and model.embedding_dim == 8
    assert torch.equal(model.head(model.embed(x)), model(x))
    assert torch.equal(model.embed(x), model.features(x))  # no normalisation added
    assert model.factory == f"{HERE}:tiny_mlp" and model.image_size == (6, 5)


def test_a_factory_with_embed_keeps_its_own_embedding():
    model = build_model(f"{HERE}:tiny_embedder", in_channels=3, num_classes=4, image_size=8).eval()
    x = torch.rand(2, 3, 8, 8)

    assert isinstance(model, EmbeddingClassifier) and model.embedding_dim == 6
    assert torch.equal(model.embed(x), model.module.embed(x))
    assert torch.equal(model(x), model.module(x)) and model(x).shape == (2, 4)
    assert model.head is model.module.fc


def test_a_lightning_module_is_a_model_too():
    model = build_model(f"{HERE}:tiny_lightning", in_channels=1, num_classes=2, image_size=8).eval()
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(model.head(model.embed(x)), model(x)) and model.embedding_dim == 4


def test_a_factory_is_called_seeded():
    a = build_model(f"{HERE}:tiny_mlp", in_channels=1, num_classes=3, image_size=4, seed=1)
    b = build_model(f"{HERE}:tiny_mlp", in_channels=1, num_classes=3, image_size=4, seed=1)
    assert torch.equal(a.head.weight, b.head.weight)


@pytest.mark.parametrize("factory", ["tiny_mlp", "tiny_embedder"])
def test_a_user_model_rebuilds_from_its_config(factory):
    model = build_model(f"{HERE}:{factory}", in_channels=1, num_classes=3, image_size=6).eval()
    config = model_config(model)
    assert config["factory"] == f"{HERE}:{factory}" and config["image_size"] == [6, 6]

    rebuilt = model_from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 6, 6)
    assert torch.equal(rebuilt.eval()(x), model(x))
    assert torch.equal(rebuilt.embed(x), model.embed(x))


def test_the_code_of_a_user_model_is_its_top_level_package():
    model = build_model(f"{HERE}:tiny_mlp", in_channels=1, num_classes=3, image_size=4)
    (path,) = model_code_paths(model_config(model))
    assert path.name == "tests" and (path / "tai" / "modeling" / "test_models_user.py").is_file()
    assert model_code_paths({"model": "small_cnn"}) == []


def test_a_user_model_loads_a_state_dict_but_its_head(tmp_path):
    source = build_model(f"{HERE}:tiny_embedder", in_channels=1, num_classes=5, image_size=6)
    path = tmp_path / "mine.pt"
    torch.save(source.module.state_dict(), path)  # the module's own layout

    model = build_model(
        f"{HERE}:tiny_embedder", in_channels=1, num_classes=3, image_size=6, seed=9, pretrained=path
    )

    assert torch.equal(model.module.body[0].weight, source.module.body[0].weight)
    assert model.head.out_features == 3 and model.pretrained_sha256 is not None


def test_a_user_model_can_freeze_its_backbone():
    model = build_model(
        f"{HERE}:tiny_embedder", in_channels=1, num_classes=3, image_size=6, freeze_backbone=True
    )
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "module.fc.weight",
        "module.fc.bias",
    ]
    model.train()
    assert not model.module.body.training


def test_a_model_without_a_head_cannot_freeze_its_backbone():
    class NoHead(TinyEmbedder):
        def forward(self, x):
            return self.embed(x)[:, :3]

    model = EmbeddingClassifier(
        NoHead(3, 1),
        in_channels=1,
        num_classes=3,
        embedding_dim=6,
        name="nohead",
        factory=None,
        image_size=(6, 6),
        head_name=None,
    )
    with pytest.raises(ValueError, match="no nn.Linear classification head .* cannot be frozen"):
        model.freeze_backbone()


# --- an installed distribution's entry point -------------------------------------------


def _install_distribution(root, monkeypatch, entry_points: str) -> None:
    """A minimal installed distribution (dist-info with entry points) on ``sys.path``."""
    (root / "tai_fake_models.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def tiny_net(*, num_classes, in_channels, image_size):
                return nn.Sequential(
                    nn.Conv2d(in_channels, 4, 3, padding=1),
                    nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(),
                    nn.Linear(4, num_classes),
                )
            """
        )
    )
    info = root / "tai_fake_models-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tai-fake-models\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")
    monkeypatch.syspath_prepend(str(root))


def test_an_installed_entry_point_is_a_model_name(tmp_path, monkeypatch):
    _install_distribution(tmp_path, monkeypatch, "tiny_net = tai_fake_models:tiny_net")

    model = build_model("tiny_net", in_channels=3, num_classes=3, image_size=8).eval()

    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(model.head(model.embed(x)), model(x)) and model.embedding_dim == 4
    config = model_config(model)
    assert config["model"] == "tiny_net" and config["factory"] == "tai_fake_models:tiny_net"
    assert config["factory_distribution"] == "tai-fake-models==1.0"
    rebuilt = model_from_config(config)  # by the recorded path
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval()(x), model(x)) and rebuilt.name == "tiny_net"


def test_an_entry_point_that_fails_to_load_names_itself(tmp_path, monkeypatch):
    _install_distribution(tmp_path, monkeypatch, "broken = tai_fake_models:missing")
    with pytest.raises(
        ValueError,
        match=r"Cannot load model entry point 'broken' = 'tai_fake_models:missing'.*no attribute",
    ):
        build_model("broken", in_channels=3, num_classes=3, image_size=8)


# --- broken contracts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        pytest.param(
            "no_such_module_xyz:make",
            r"Cannot import module 'no_such_module_xyz' of model factory "
            r"'no_such_module_xyz:make' .*Install the package or put it on PYTHONPATH",
            id="no-module",
        ),
        pytest.param(
            f"{HERE}:missing",
            r"has no attribute 'missing' .*name the function after the colon",
            id="no-attribute",
        ),
        pytest.param("pkg.mod:", "as 'package.module:factory', but got 'pkg.mod:'", id="malformed"),
        pytest.param(f"{HERE}:NOT_CALLABLE", "is a list, not a function", id="not-callable"),
        pytest.param(
            f"{HERE}:wrong_arguments",
            r"must accept the keyword arguments num_classes, in_channels and image_size",
            id="signature",
        ),
        pytest.param(f"{HERE}:failing", r"failed: RuntimeError: no GPU here", id="raises"),
        pytest.param(
            f"{HERE}:not_a_module",
            r"returned a dict, not a torch.nn.Module",
            id="not-a-module",
        ),
        pytest.param(
            f"{HERE}:no_linear",
            r"has no embed\(x\) method and no nn.Linear layer.*Give the module an embed\(x\)",
            id="no-embedding",
        ),
        pytest.param(
            f"{HERE}:wrong_last_linear",
            r"last nn.Linear .*'1', has 7 outputs, not num_classes = 3",
            id="last-linear-not-the-head",
        ),
        pytest.param(
            f"{HERE}:head_not_last",
            r"is not the output of its last nn.Linear 'fc'",
            id="something-after-the-head",
        ),
        pytest.param(
            f"{HERE}:returns_a_tuple",
            r"returned a tuple for a probe batch .*must return the logits, a tensor \(2, 3\)",
            id="tuple-output",
        ),
        pytest.param(
            f"{HERE}:embeds_a_map",
            r"embed\(x\) .* returned a tensor of shape \(2, 6, 8, 8\), not a tensor \(N, D\)",
            id="embedding-not-flat",
        ),
        pytest.param(
            f"{HERE}:ignores_the_size",
            r"failed on a probe batch of shape \(2, 1, 8, 8\).*Does it take 8x8 images with 1 "
            r"channels\?",
            id="wrong-size",
        ),
    ],
)
def test_a_broken_factory_is_refused_by_name(factory, message):
    with pytest.raises(ValueError, match=message) as caught:
        build_model(factory, in_channels=1, num_classes=3, image_size=8)
    assert factory.split(":")[0] in str(caught.value) or "factory" in str(caught.value)


def test_a_factory_needs_the_image_size():
    with pytest.raises(ValueError, match=r"needs image_size for the model factory"):
        build_model(f"{HERE}:tiny_mlp", in_channels=1, num_classes=3)
