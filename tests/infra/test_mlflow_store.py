"""MlflowStore on the embedded stack (MLflow on SQLite, a local artifact folder): weights
integrity, registration digests, and no secret setting in anything MLflow stores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

from infra.integrity import MODEL_SHA256_TAG, WEIGHTS_SHA256_TAG, manifest_sha256
from infra.mlflow_store import IntegrityError, MlflowStore, RegistryError
from infra.settings import Settings, load_settings
from tests.secret_scan import mlflow_leaks, secret_values

pytestmark = pytest.mark.integration

SECRETS = {
    "webhook_secret": "whsec-7f3a9c2e-never-log-me",
    "lakefs_secret_access_key": "lakefsSECRETkey-9d8c7b6a5f4e",
}
CONFIG = {"model": "small_cnn", "in_channels": 1, "num_classes": 3, "temperature": 1.5}


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    root = tmp_path_factory.mktemp("store")
    return load_settings(workspace=root / ".tai", experiment_name="store-tests", **SECRETS)


@pytest.fixture(scope="module")
def store(settings) -> MlflowStore:
    return MlflowStore(settings)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"head.weight": torch.randn(3, 4, generator=g), "temperature": torch.tensor(1.5)}


def _artifact_dir(store: MlflowStore, run_id: str) -> Path:
    """Where the run's artifacts lie on disk (the embedded store's local folder)."""
    return Path(unquote(urlparse(store.client.get_run(run_id).info.artifact_uri).path))


def _tamper(store: MlflowStore, run_id: str, state: dict) -> Path:
    """Replace the logged state_dict.pt on disk, as an attacker with artifact access would."""
    path = _artifact_dir(store, run_id) / "weights" / "state_dict.pt"
    assert path.is_file()
    torch.save(state, path)
    return path


# --- weights integrity ---------------------------------------------------------------


def test_log_weights_records_the_digest_of_the_exact_bytes_as_param_and_tag(store):
    run_id = store.create_run("weights", {})

    digest = store.log_weights(run_id, _state(), CONFIG)

    on_disk = (_artifact_dir(store, run_id) / "weights" / "state_dict.pt").read_bytes()
    assert digest == hashlib.sha256(on_disk).hexdigest()
    data = store.client.get_run(run_id).data
    assert data.params[WEIGHTS_SHA256_TAG] == data.tags[WEIGHTS_SHA256_TAG] == digest


def test_untampered_weights_load(store):
    run_id = store.create_run("weights", {})
    digest = store.log_weights(run_id, _state(), CONFIG)

    state, config = store.load_weights(run_id, expected_sha256=digest)

    assert config == CONFIG
    assert all(torch.equal(state[k], v) for k, v in _state().items())


def test_weights_tampered_in_the_artifact_folder_are_refused(store):
    run_id = store.create_run("weights", {})
    digest = store.log_weights(run_id, _state(0), CONFIG)
    path = _tamper(store, run_id, _state(1))
    actual = hashlib.sha256(path.read_bytes()).hexdigest()

    with pytest.raises(
        IntegrityError,
        match=rf"weights/state_dict\.pt of run {run_id} has been modified: its sha256 is "
        rf"{actual}, but {digest} was recorded .*re-register the model from a trusted",
    ):
        store.load_weights(run_id)


def test_weights_that_differ_from_the_expected_digest_are_refused(store):
    run_id = store.create_run("weights", {})
    store.log_weights(run_id, _state(), CONFIG)
    other = hashlib.sha256(b"the registry's record").hexdigest()

    with pytest.raises(IntegrityError, match=rf"but {other} was recorded"):
        store.load_weights(run_id, expected_sha256=other)


def test_weights_without_a_recorded_digest_are_refused(store, tmp_path):
    # A run whose weights were logged before digests existed, or by something else.
    run_id = store.create_run("legacy", {})
    torch.save(_state(), tmp_path / "state_dict.pt")
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    store.client.log_artifacts(run_id, str(tmp_path), "weights")

    with pytest.raises(IntegrityError, match=rf"no sha256 is recorded for .*run {run_id}"):
        store.load_weights(run_id)


def test_a_run_without_weights_is_a_registry_error(store):
    run_id = store.create_run("empty", {})

    with pytest.raises(RegistryError, match=rf"run {run_id} has no `weights` artifact"):
        store.load_weights(run_id)


def test_a_runs_weights_cannot_be_replaced(store):
    run_id = store.create_run("weights", {})
    first = store.log_weights(run_id, _state(0), CONFIG)

    assert store.log_weights(run_id, _state(0), CONFIG) == first  # the same bytes: fine
    with pytest.raises(RegistryError, match=rf"already logged weights with sha256 {first}"):
        store.log_weights(run_id, _state(1), CONFIG)


# --- registration --------------------------------------------------------------------


def test_register_records_the_weights_and_model_digests_on_the_version(store, tmp_path):
    run_id = store.create_run("register", {})
    digest = store.log_weights(run_id, _state(), CONFIG)

    version = store.register(f"runs:/{run_id}/weights", run_id, {"tai.gates.passed": "true"})

    tags = store.get_version(version).tags
    assert tags[WEIGHTS_SHA256_TAG] == digest
    assert tags[MODEL_SHA256_TAG] == manifest_sha256(_artifact_dir(store, run_id) / "weights")
    assert tags["tai.gates.passed"] == "true"


def test_register_refuses_a_weights_tag_other_than_the_runs_and_registers_nothing(store):
    run_id = store.create_run("register", {})
    store.log_weights(run_id, _state(), CONFIG)
    before = [v.version for v in store.list_versions()]
    forged = hashlib.sha256(b"forged").hexdigest()

    with pytest.raises(IntegrityError, match=rf"{WEIGHTS_SHA256_TAG}={forged} differs from"):
        store.register(f"runs:/{run_id}/weights", run_id, {WEIGHTS_SHA256_TAG: forged})
    assert [v.version for v in store.list_versions()] == before


# --- secrets -------------------------------------------------------------------------


def test_no_secret_setting_ever_lands_in_mlflow(store, settings, tmp_path):
    secrets = secret_values(settings)
    assert set(secrets) >= set(SECRETS)  # the scan is armed
    webhook = secrets["webhook_secret"]
    # A careless caller hands the store secrets in every place it writes to.
    run_id = store.create_run(f"run-{webhook}", {"tai.note": f"token={webhook}"})
    store.log_params(run_id, {"webhook": webhook, "settings": settings.model_dump_json()})
    store.log_params(run_id, {"lakefs": settings.lakefs_secret_access_key})  # a SecretStr
    store.log_metrics(run_id, {f"m_{webhook}": 1.0})
    store.log_json(
        run_id, {"settings": settings.model_dump(mode="json"), "raw": webhook}, "s/a.json"
    )
    store.log_text(run_id, f"key {secrets['lakefs_secret_access_key']}", "s/b.txt")
    store.log_weights(run_id, _state(), {**CONFIG, "note": webhook})
    version = store.register(f"runs:/{run_id}/weights", run_id, {"who": webhook})
    store.set_version_tag(version, "reason", f"approved with {webhook}")
    leaky = tmp_path / "report.html"
    leaky.write_text(f"<p>{webhook}</p>")
    with pytest.raises(RegistryError, match=r"holds the value of the secret setting `webhook"):
        store.log_file(run_id, leaky, "s")
    store.end_run(run_id)

    assert mlflow_leaks(settings, secrets) == []
    # Redacted, not dropped: the rest of each value is still there.
    data = store.client.get_run(run_id).data
    assert data.params["webhook"] == "**********"
    assert data.tags["tai.note"] == "token=**********"
    assert store.get_version(version).tags["reason"] == "approved with **********"

    # The scan itself can fail: a secret written behind the store's back is found.
    store.client.set_tag(run_id, "oops", webhook)
    assert f"webhook_secret in run {run_id} tags" in mlflow_leaks(settings, secrets)
