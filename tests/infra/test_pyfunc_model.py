"""The served pyfunc: calibrated answers, deferral below the threshold, guarded inputs of any
size fitted to the model, any architecture rebuilt from its config (torchvision's, a user's
factory), weights and model files checked before loading, and loading in a fresh process.

The model used throughout answers the same for every image: its head's weights are zero and
its bias is ``(2, 0, 0)``, so with temperature ``T = 2`` the calibrated probabilities are
``softmax((1, 0, 0)) = (e, 1, 1) / (e + 2)`` and the confidence ``e / (e + 2) = 0.5761``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModelContext

from infra.integrity import MODEL_SHA256_TAG, WEIGHTS_SHA256_TAG, IntegrityError, sha256_hex
from infra.mlflow_store import MlflowStore
from infra.pyfunc_model import (
    InvalidImagesError,
    TaiClassifier,
    decide,
    serving_config,
    validate_images,
)
from infra.settings import load_settings
from tai.data.model_input import fit_images
from tai.modeling.models import build_model, model_config
from tai.modeling.temperature import TemperatureScaledModel
from tests.layouts import conv_layouts

CLASSES = ["cat", "dog", "eel"]
SHAPE = (1, 16, 16)
WEIGHTS_CONFIG = {"model": "small_cnn", "in_channels": 1, "num_classes": 3, "temperature": 2.0}
E = math.e
PROBS = [E / (E + 2), 1 / (E + 2), 1 / (E + 2)]  # hand-computed, see the module docstring
CONFIDENCE = PROBS[0]  # 0.5761


def _constant_model() -> TemperatureScaledModel:
    model = build_model("small_cnn", in_channels=1, num_classes=3)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([2.0, 0.0, 0.0]))
    return TemperatureScaledModel(model, 2.0).eval()


def _images(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


# --- decide and validate_images ------------------------------------------------------


def test_decide_defers_strictly_below_the_threshold():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])

    answer = decide(probs, CLASSES, 0.7)

    assert answer["label"].tolist() == ["cat", "cat", "eel"]
    assert answer["class_index"].tolist() == [0, 0, 2]
    np.testing.assert_allclose(answer["confidence"], [0.7, 0.4, 0.8])
    assert answer["decision"].tolist() == ["predict", "defer_to_human", "predict"]
    assert answer["probabilities"].tolist()[1] == [0.4, 0.35, 0.25]


def test_decide_without_a_threshold_never_defers():
    probs = np.array([[0.34, 0.33, 0.33]])

    assert decide(probs, CLASSES, None)["decision"].tolist() == ["predict"]


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((2, 16, 16), np.float32), r"shape \(N, C, H, W\) = \(N, 1, 16, 16\), but got 3"),
        (np.zeros((2, 3, 16, 16), np.float32), r"\(N, 1, 16, 16\) .*but got \(2, 3, 16, 16\)"),
        (np.zeros((2, 1, 8, 8), np.float32), r"but got \(2, 1, 8, 8\)"),
        (np.zeros((1, 1, 64, 64), np.float32), "at most 1024 pixels, but got 64x64 = 4096"),
        (np.zeros((5, 1, 16, 16), np.float32), "1 to 4 images per request, but got 5"),
        (np.zeros((0, 1, 16, 16), np.float32), "1 to 4 images per request, but got 0"),
        (np.zeros((1, 1, 16, 16), np.uint8), "floating point pixel values .*dtype uint8"),
        (np.full((1, 1, 16, 16), np.nan, np.float32), "finite pixel values, but found NaN"),
        (np.full((1, 1, 16, 16), 255.0, np.float32), r"values in \[0, 1\], but got .*\[255, 255\]"),
        (np.full((1, 1, 16, 16), -0.5, np.float32), r"but got values in \[-0.5, -0.5\]"),
        ({"a": 1}, r"float array of images .* or a list of \(C, H, W\) arrays, but got dict"),
    ],
    ids=[
        "rank",
        "channels",
        "size",
        "too-many-pixels",
        "batch",
        "empty",
        "uint8",
        "nan",
        "unscaled",
        "negative",
        "dict",
    ],
)
def test_validate_images_refuses_bad_input(images, match):
    with pytest.raises(InvalidImagesError, match=match):
        validate_images(images, image_shape=SHAPE, max_pixels=1024, max_batch=4)


def test_validate_images_accepts_a_torch_batch_in_range():
    images = torch.rand(2, *SHAPE)

    out = validate_images(images, image_shape=SHAPE)

    assert out.dtype == np.float32 and out.shape == (2, *SHAPE)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 3, 40, 24), np.float64),
        np.zeros((1, 1, 8, 8), np.float32),
        [np.zeros((3, 20, 30), np.float32), torch.rand(1, 7, 5)],
    ],
    ids=["rgb-larger-float64", "smaller", "list-of-sizes"],
)
def test_without_an_image_shape_any_size_and_mode_is_accepted(images):
    out = validate_images(images, max_pixels=1024, max_batch=4)

    shapes = [a.shape for a in out] if isinstance(out, list) else [out.shape]
    expected = [tuple(a.shape) for a in images] if isinstance(images, list) else [images.shape]
    assert shapes == expected
    assert all(a.dtype == np.float32 for a in (out if isinstance(out, list) else [out]))


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((2, 4, 16, 16), np.float32), r"1 \(grayscale\) or 3 \(RGB\) channels first"),
        (
            np.zeros((2, 16, 16, 3), np.float32),
            r"channels first, but got of shape \(2, 16, 16, 3\)",
        ),
        (np.zeros((2, 16, 16), np.float32), r"\(N, C, H, W\) with C = 1 or 3, but got 3 dim"),
        ([np.zeros((3, 8, 8), np.float32), np.zeros((8, 8))], r"but image 1 is of shape \(8, 8\)"),
        ([np.zeros((3, 8, 8), np.float32), [[0.5]]], "but image 1 is a list"),
        ([np.zeros((1, 64, 64), np.float32)], "at most 1024 pixels, but got image 0 64x64 = 4096"),
        ([np.full((1, 4, 4), 2.0, np.float32)], r"but got values in \[2, 2\] in image 0"),
        ([], "1 to 4 images per request, but got 0"),
        ([np.zeros((1, 4, 4), np.float32)] * 5, "1 to 4 images per request, but got 5"),
    ],
    ids=[
        "rgba",
        "channels-last",
        "rank",
        "list-rank",
        "list-item",
        "list-too-many-pixels",
        "list-range",
        "list-empty",
        "list-batch",
    ],
)
def test_without_an_image_shape_bad_input_is_still_refused(images, match):
    with pytest.raises(InvalidImagesError, match=match):
        validate_images(images, max_pixels=1024, max_batch=4)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"classes": ["a", "b"]}, r"Expected 3 distinct class labels .*\['a', 'b'\]"),
        ({"classes": ["a", "a", "b"]}, "Expected 3 distinct class labels"),
        ({"defer_threshold": 1.5}, r"`defer_threshold` to be a confidence in \[0, 1\] or None"),
        ({"defer_threshold": True}, "`defer_threshold` to be a confidence"),
        ({"image_shape": (3, 16, 16)}, r"`image_shape` \(C, H, W\) with C = 1"),
        ({"max_pixels": 0}, "`max_pixels` to be an integer >= 1, but got 0"),
        ({"max_pixels": 100}, "16x16 = 256 pixels, more than max_pixels = 100"),
    ],
)
def test_serving_config_refuses_bad_values(change, match):
    kwargs = {"classes": CLASSES, "image_shape": SHAPE, "weights_sha256": "0" * 64, **change}
    with pytest.raises(ValueError, match=match):
        serving_config(WEIGHTS_CONFIG, **kwargs)


def test_serving_config_takes_the_size_from_the_weights_config():
    config = serving_config(
        {**WEIGHTS_CONFIG, "image_size": [16, 12], "model_api": 2, "factory": None},
        classes=CLASSES,
        weights_sha256="0" * 64,
    )
    assert config["image_shape"] == [1, 16, 12] and config["image_size"] == [16, 12]
    assert config["model_api"] == 2 and config["factory"] is None

    with pytest.raises(ValueError, match=r"differs from the model's image_size \[16, 12\]"):
        serving_config(
            {**WEIGHTS_CONFIG, "image_size": [16, 12]},
            classes=CLASSES,
            image_shape=(1, 16, 16),
            weights_sha256="0" * 64,
        )
    with pytest.raises(ValueError, match="Expected `image_size` in `weights_config` or an"):
        serving_config(WEIGHTS_CONFIG, classes=CLASSES, weights_sha256="0" * 64)


def test_serving_config_needs_the_weights_config():
    with pytest.raises(ValueError, match="lacks temperature"):
        serving_config(
            {"model": "small_cnn", "in_channels": 1, "num_classes": 3},
            classes=CLASSES,
            image_shape=SHAPE,
            weights_sha256="0" * 64,
        )


# --- TaiClassifier on local artifacts ---------------------------------------------------


def _artifacts(
    folder: Path, defer_threshold: float | None, model: torch.nn.Module | None = None, **config
) -> dict[str, str]:
    torch.save((model or _constant_model()).state_dict(), folder / "state_dict.pt")
    digest = sha256_hex((folder / "state_dict.pt").read_bytes())
    serving = serving_config(
        WEIGHTS_CONFIG,
        weights_sha256=digest,
        classes=CLASSES,
        image_shape=SHAPE,
        defer_threshold=defer_threshold,
        **config,
    )
    (folder / "config.json").write_text(json.dumps(serving))
    return {"weights": str(folder / "state_dict.pt"), "config": str(folder / "config.json")}


def _loaded(artifacts: dict[str, str], **model_config) -> TaiClassifier:
    model = TaiClassifier()
    model.load_context(PythonModelContext(artifacts=artifacts, model_config=model_config))
    return model


@pytest.mark.parametrize(
    ("threshold", "decision"),
    [(0.6, "defer_to_human"), (CONFIDENCE, "predict"), (0.5, "predict"), (None, "predict")],
)
def test_the_classifier_answers_calibrated_probabilities_and_the_decision(
    tmp_path, threshold, decision
):
    model = _loaded(_artifacts(tmp_path, threshold))

    answer = model.predict(None, _images(3))

    assert answer["label"].tolist() == ["cat"] * 3
    np.testing.assert_allclose(np.stack(answer["probabilities"]), [PROBS] * 3, atol=1e-6)
    np.testing.assert_allclose(answer["confidence"], CONFIDENCE, atol=1e-6)
    assert answer["decision"].tolist() == [decision] * 3


def test_the_served_model_runs_channels_last_on_the_cpu_and_answers_as_the_nchw_one(tmp_path):
    nchw = TemperatureScaledModel(
        build_model("small_cnn", in_channels=1, num_classes=3, seed=3), 2.0
    ).eval()
    served = _loaded(_artifacts(tmp_path, None, model=nchw)).model

    assert conv_layouts(served) == ["nhwc"] * 3
    x = torch.from_numpy(_images(4))
    with torch.no_grad():
        expected, answered = nchw(x), served(x)
    torch.testing.assert_close(answered, expected, rtol=0, atol=1e-5)
    assert expected.std(dim=0).min() > 1e-4  # answers that depend on the image


def test_the_classifier_refuses_weights_swapped_beside_its_config(tmp_path):
    artifacts = _artifacts(tmp_path, 0.6)
    other = _constant_model().state_dict()
    other["temperature"] = torch.tensor(0.5)  # over-confident: it would never defer
    torch.save(other, artifacts["weights"])

    with pytest.raises(IntegrityError, match=r"weights of the served model .* has been modified"):
        _loaded(artifacts)


def test_the_classifier_checks_the_registrys_digest_when_given(tmp_path):
    artifacts = _artifacts(tmp_path, 0.6)
    digest = sha256_hex(Path(artifacts["weights"]).read_bytes())

    assert _loaded(artifacts, expected_weights_sha256=digest).config["defer_threshold"] == 0.6
    with pytest.raises(IntegrityError, match=rf"but {'1' * 64} was recorded"):
        _loaded(artifacts, expected_weights_sha256="1" * 64)


def test_bad_input_is_an_mlflow_invalid_parameter_error(tmp_path):
    model = _loaded(_artifacts(tmp_path, 0.6))
    images = _images(1)
    images[0, 0, 0, 0] = 2.0

    with pytest.raises(MlflowException, match=r"pixel values in \[0, 1\]") as caught:
        model.predict(None, images)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


def test_the_classifier_answers_images_of_any_size_and_mode(tmp_path):
    model = _loaded(_artifacts(tmp_path, None))
    rng = np.random.default_rng(1)

    for images in (
        rng.random((2, 3, 40, 24), dtype=np.float32),  # RGB, larger, not square
        rng.random((1, 1, 8, 8)),  # smaller, float64
        [rng.random((1, 30, 30), dtype=np.float32), rng.random((3, 9, 17), dtype=np.float32)],
    ):
        answer = model.predict(None, images)

        assert answer["label"].tolist() == ["cat"] * len(images)
        np.testing.assert_allclose(
            np.stack(answer["probabilities"]), [PROBS] * len(images), atol=1e-6
        )


def tiny_factory(*, num_classes, in_channels, image_size):
    """A user's model, imported by the pyfunc from the path in its config."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16, num_classes),
    )


def _registered(folder: Path, module: torch.nn.Module, temperature: float) -> dict[str, str]:
    """The artifacts of a registered ``module`` (its config from ``model_config``)."""
    scaled = TemperatureScaledModel(module, temperature)
    torch.save(scaled.state_dict(), folder / "state_dict.pt")
    serving = serving_config(
        {**model_config(module), "temperature": temperature},
        weights_sha256=sha256_hex((folder / "state_dict.pt").read_bytes()),
        classes=CLASSES,
    )
    (folder / "config.json").write_text(json.dumps(serving))
    return {"weights": str(folder / "state_dict.pt"), "config": str(folder / "config.json")}


@pytest.mark.parametrize(
    ("name", "channels", "size"),
    [
        ("resnet18", 3, (32, 32)),
        ("mobilenet_v3_small", 1, (32, 40)),
        (f"{__name__}:tiny_factory", 1, (12, 12)),
    ],
    ids=["torchvision", "torchvision-grayscale", "user-factory"],
)
def test_the_classifier_rebuilds_any_architecture_and_fits_the_images_to_it(
    tmp_path, name, channels, size
):
    module = build_model(name, in_channels=channels, num_classes=3, image_size=size, seed=4)
    module.train()(torch.rand(8, channels, *size))  # batch-norm statistics that are not 0, 1
    module.eval()
    model = _loaded(_registered(tmp_path, module, 1.5))
    assert type(model.model.model) is type(module) and model.model.model.name == name
    assert model.config["image_shape"] == [channels, *size]

    rng = np.random.default_rng(2)
    other = 4 - channels  # the other mode: RGB for a grayscale model, and back
    batch = rng.random((2, other, 50, 70), dtype=np.float32)
    listed = [
        rng.random((other, 20, 90), dtype=np.float32),
        rng.random((1, *size), dtype=np.float32),
    ]

    with torch.no_grad():
        fitted = fit_images(torch.from_numpy(batch), in_channels=channels, image_size=size)
        expected = (module(fitted) / 1.5).softmax(1)
        fitted_list = torch.stack(
            [fit_images(torch.from_numpy(a), in_channels=channels, image_size=size) for a in listed]
        )
        expected_list = (module(fitted_list) / 1.5).softmax(1)
    for images, probs in ((batch, expected), (listed, expected_list)):
        answer = model.predict(None, images)
        np.testing.assert_allclose(np.stack(answer["probabilities"]), probs.numpy(), atol=1e-6)
        assert answer["class_index"].tolist() == probs.argmax(1).tolist()


def test_a_served_config_without_model_api_rebuilds_the_old_resnet18(tmp_path):
    # Registered before torchvision architectures: "resnet18" was the CIFAR-stem ResNet.
    module = build_model("resnet18_small", in_channels=1, num_classes=3, seed=0).eval()
    torch.save(TemperatureScaledModel(module, 2.0).state_dict(), tmp_path / "state_dict.pt")
    legacy = {"model": "resnet18", "in_channels": 1, "num_classes": 3, "temperature": 2.0}
    serving = serving_config(
        legacy,
        weights_sha256=sha256_hex((tmp_path / "state_dict.pt").read_bytes()),
        classes=CLASSES,
        image_shape=SHAPE,
    )
    (tmp_path / "config.json").write_text(json.dumps(serving))
    artifacts = {
        "weights": str(tmp_path / "state_dict.pt"),
        "config": str(tmp_path / "config.json"),
    }

    model = _loaded(artifacts)

    images = _images(2)
    with torch.no_grad():
        expected = (module(torch.from_numpy(images)) / 2.0).softmax(1).numpy()
    np.testing.assert_allclose(
        np.stack(model.predict(None, images)["probabilities"]), expected, atol=1e-6
    )


# --- logged, registered, loaded --------------------------------------------------------


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A store whose champion is the constant model, deferring below 0.6."""
    root = tmp_path_factory.mktemp("pyfunc")
    settings = load_settings(workspace=root / ".tai", experiment_name="pyfunc-tests")
    store = MlflowStore(settings)
    run_id = store.create_run("pyfunc", {})
    store.log_weights(run_id, _constant_model().state_dict(), WEIGHTS_CONFIG)
    uri = store.log_model(run_id, _images(2), classes=CLASSES, defer_threshold=0.6)
    version = store.register(uri, run_id, {})
    store.set_champion(version)
    store.end_run(run_id)
    return store


def _model_file(store: MlflowStore, relative: str) -> Path:
    """A file of the champion's logged model, in the local artifact folder."""
    import mlflow

    source = store.client.get_model_version(store.model_name, store.champion().version).source
    model_id = source.removeprefix("models:/")
    location = mlflow.MlflowClient(store.settings.tracking_uri).get_logged_model(model_id)
    return Path(unquote(urlparse(location.artifact_location).path)) / relative


@pytest.mark.integration
def test_registration_records_both_digests(champion):
    tags = champion.champion().tags

    assert len(tags[WEIGHTS_SHA256_TAG]) == 64 and len(tags[MODEL_SHA256_TAG]) == 64
    config = json.loads(_model_file(champion, "artifacts/serving_config.json").read_text())
    assert config["weights_sha256"] == tags[WEIGHTS_SHA256_TAG]
    assert config["defer_threshold"] == 0.6 and config["classes"] == CLASSES
    assert not list(_model_file(champion, "").rglob("*.pkl"))  # models from code: no pickle


@pytest.mark.integration
def test_load_pyfunc_checks_the_digests_then_defers_to_a_human(champion):
    model = champion.load_pyfunc()

    answer = model.predict(_images(2))

    assert answer["decision"].tolist() == ["defer_to_human"] * 2
    np.testing.assert_allclose(answer["confidence"], CONFIDENCE, atol=1e-6)
    # Any size and mode, and a list of sizes: MLflow passes them through (no input schema).
    rng = np.random.default_rng(3)
    for images in (
        rng.random((2, 3, 40, 24), dtype=np.float32),
        [rng.random((1, 9, 9), dtype=np.float32), rng.random((3, 30, 20), dtype=np.float32)],
    ):
        assert model.predict(images)["decision"].tolist() == ["defer_to_human"] * 2
    with pytest.raises(MlflowException, match="finite pixel values"):
        model.predict(np.full((1, *SHAPE), np.nan, np.float32))


@pytest.mark.integration
def test_a_served_model_file_changed_after_registration_is_refused(champion):
    # An attacker with write access to the artifact store turns deferral off.
    path = _model_file(champion, "artifacts/serving_config.json")
    original = path.read_text()
    path.write_text(original.replace('"defer_threshold": 0.6', '"defer_threshold": null'))
    try:
        with pytest.raises(
            IntegrityError,
            match=rf"files of model `{champion.model_name}` version 1 have been modified",
        ):
            champion.load_pyfunc()
    finally:
        path.write_text(original)
    champion.load_pyfunc()  # restored: loads again


@pytest.mark.integration
def test_weights_swapped_in_the_served_model_are_refused_even_by_plain_mlflow(champion):
    import mlflow

    path = _model_file(champion, "artifacts/state_dict.pt")
    original = path.read_bytes()
    other = _constant_model().state_dict()
    other["model.head.bias"] = torch.tensor([0.0, 9.0, 0.0])
    torch.save(other, path)
    mlflow.set_tracking_uri(champion.settings.tracking_uri)
    try:
        with pytest.raises(IntegrityError, match="has been modified"):
            mlflow.pyfunc.load_model(f"models:/{champion.model_name}@champion")
    finally:
        path.write_bytes(original)


_FRESH = """
import json, sys
import mlflow.pyfunc, numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
answer = model.predict(np.random.default_rng(0).random((3, 1, 16, 16), dtype=np.float32))
import infra.pyfunc_model
print(json.dumps({"answer": answer.to_dict("list"), "code": infra.pyfunc_model.__file__}))
"""


@pytest.mark.integration
def test_the_champion_loads_and_answers_in_a_fresh_python_process(champion, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": champion.settings.tracking_uri}
    done = subprocess.run(
        [sys.executable, "-c", _FRESH, f"models:/{champion.model_name}@champion"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["answer"]["decision"] == ["defer_to_human"] * 3
    np.testing.assert_allclose(result["answer"]["confidence"], CONFIDENCE, atol=1e-6)
    # The model's own copy of its code was imported (code_paths), not the working tree.
    assert result["code"].endswith("code/infra/pyfunc_model.py")
    assert not result["code"].startswith(str(Path(__file__).resolve().parents[2] / "infra"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(server: subprocess.Popen) -> None:
    """Stop the CLI and the web server it started (its process group), even if hung."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_models_serve_answers_defer_to_human_over_http(champion, tmp_path):
    import httpx

    port = _free_port()
    # MLflow starts `uvicorn` by name: the virtualenv's bin folder goes on the PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": champion.settings.tracking_uri, "PATH": path}
    command = [
        *(sys.executable, "-m", "mlflow", "models", "serve"),
        *("-m", f"models:/{champion.model_name}@champion", "--env-manager", "local"),
        *("-p", str(port), "-h", "127.0.0.1"),
    ]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        # A session of its own: the CLI starts the web server as a child; both are stopped.
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "server not up in 180 s: " + log.read_text()
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)

        ok = httpx.post(f"{url}/invocations", json={"inputs": _images(2).tolist()}, timeout=60)
        rgb = np.random.default_rng(4).random((2, 3, 40, 24))  # another size and mode
        resized = httpx.post(f"{url}/invocations", json={"inputs": rgb.tolist()}, timeout=60)
        bad = httpx.post(
            f"{url}/invocations", json={"inputs": (_images(1) * 255).tolist()}, timeout=60
        )
    finally:
        _stop(server)

    assert ok.status_code == 200, ok.text
    predictions = ok.json()["predictions"]
    assert [p["decision"] for p in predictions] == ["defer_to_human"] * 2
    assert [p["label"] for p in predictions] == ["cat"] * 2
    assert resized.status_code == 200, resized.text
    assert [p["decision"] for p in resized.json()["predictions"]] == ["defer_to_human"] * 2
    assert bad.status_code == 400 and "pixel values in [0, 1]" in bad.text


@pytest.mark.integration
def test_a_server_can_require_the_registrys_weights_digest(champion, monkeypatch):
    import mlflow

    mlflow.set_tracking_uri(champion.settings.tracking_uri)
    uri = f"models:/{champion.model_name}@champion"
    digest = champion.champion().tags[WEIGHTS_SHA256_TAG]
    monkeypatch.setenv(
        "MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"expected_weights_sha256": digest})
    )
    assert mlflow.pyfunc.load_model(uri).predict(_images(1))["label"].tolist() == ["cat"]

    forged = json.dumps({"expected_weights_sha256": "f" * 64})
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", forged)
    with pytest.raises(IntegrityError, match=f"but {'f' * 64} was recorded"):
        mlflow.pyfunc.load_model(uri)
