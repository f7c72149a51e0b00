import pytest
import torch
from torch import nn

from tai.modeling.memory_format import channels_last_on_cpu, to_channels_last
from tai.modeling.models import small_cnn
from tests.layouts import conv_layouts


@pytest.mark.parametrize("in_channels", [1, 3])
def test_channels_last_holds_in_the_block_and_the_weights_come_back_as_they_were(in_channels):
    model = small_cnn(in_channels, 4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    x = torch.rand(8, in_channels, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    assert set(conv_layouts(model)) == {"nchw"}
    with channels_last_on_cpu(model):
        assert set(conv_layouts(model)) == {"nhwc"}
        with torch.no_grad():
            inside = model(x)
    assert set(conv_layouts(model)) == {"nchw"}
    assert all(p.is_contiguous() for p in model.parameters())
    assert list(model.parameters()) == params and all(
        a is b for a, b in zip(model.parameters(), params, strict=True)
    )
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    # The same function, summed in another order: float rounding only.
    torch.testing.assert_close(inside, expected, rtol=0, atol=1e-5)
    assert not torch.equal(inside, torch.zeros_like(inside))


def test_the_layout_is_put_back_after_an_error():
    model = small_cnn(1, 3)
    with pytest.raises(RuntimeError, match="boom"), channels_last_on_cpu(model):
        assert set(conv_layouts(model)) == {"nhwc"}
        raise RuntimeError("boom")
    assert set(conv_layouts(model)) == {"nchw"}


def test_a_model_already_channels_last_stays_so_and_one_without_convolutions_is_untouched():
    model = small_cnn(1, 3)
    assert to_channels_last(model) is True
    assert to_channels_last(model) is False  # nothing left to change
    with channels_last_on_cpu(model):
        pass
    assert set(conv_layouts(model)) == {"nhwc"}  # not turned to NCHW on leaving
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    weight = linear[1].weight
    assert to_channels_last(linear) is False
    with channels_last_on_cpu(linear):
        assert linear[1].weight is weight
