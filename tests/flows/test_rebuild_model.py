"""A registered version rebuilt for inference: its weights as registered, channels-last on
the CPU, and the same weights digest whatever the layout."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from flows.tasks.evaluation import rebuild_model, weights_config, weights_digest
from tai.modeling.models import build_model
from tai.modeling.temperature import TemperatureScaledModel
from tai.tags import WEIGHTS_SHA256
from tests.layouts import conv_layouts


class _Store:
    """Hands back the state dict and config it was given, as MlflowStore.load_weights."""

    def __init__(self, state: dict, config: dict) -> None:
        self.state, self.config, self.asked = state, config, []

    def load_weights(self, run_id: str, *, expected_sha256: str | None = None):
        self.asked.append((run_id, expected_sha256))
        return self.state, self.config


def test_a_rebuilt_version_is_channels_last_with_the_registered_weights():
    trained = TemperatureScaledModel(
        build_model("small_cnn", in_channels=1, num_classes=3, image_size=12, seed=5), 1.5
    ).eval()
    calibrated = SimpleNamespace(model=trained, fit=SimpleNamespace(temperature=1.5))
    store = _Store(trained.state_dict(), weights_config(calibrated, (1, 12, 12)))
    version = SimpleNamespace(run_id="r1", tags={WEIGHTS_SHA256: "abc"})

    model, config = rebuild_model(store, version)

    assert store.asked == [("r1", "abc")]
    assert conv_layouts(model) == ["nhwc"] * 3
    assert weights_digest(model) == weights_digest(trained)  # same values, other layout
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x), rtol=0, atol=1e-5)
    assert config["temperature"] == 1.5
