import pytest
import torch

from tai.modeling.models import MODEL_NAMES, build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_models_map_images_to_logits_through_an_embedding(name, channels):
    model = build_model(name, in_channels=channels, num_classes=4).eval()
    x = torch.rand(2, channels, 28, 28)
    emb = model.embed(x)
    assert emb.shape == (2, model.embedding_dim)
    assert torch.allclose(model(x), model.head(emb))
    assert model(x).shape == (2, 4)


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
            "unknown model 'vgg'; choose one of small_cnn, resnet18",
        ),
        (
            {"name": "small_cnn", "in_channels": 4, "num_classes": 3},
            "in_channels must be 1 .* or 3 .*, got 4",
        ),
        ({"name": "small_cnn", "in_channels": 1, "num_classes": 1}, "at least 2 classes, got 1"),
    ],
)
def test_build_model_rejects_bad_arguments(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        build_model(name, **kwargs)
