"""MlflowStore on the embedded stack (MLflow on SQLite, a local artifact folder): weights
integrity, registration digests, and no secret setting in anything MLflow stores."""

from __future__ import annotations

import hashlib
import json
import re
import time
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


# --- registration is all or nothing (BUG-5) --------------------------------------------


@pytest.fixture
def registry(settings) -> MlflowStore:
    """A store on its own registered model, so the alias and the listing are this test's."""
    import uuid

    name = f"pending-{uuid.uuid4().hex[:8]}"
    return MlflowStore(settings.model_copy(update={"registered_model_name": name}))


def test_a_pending_version_is_neither_listed_nor_champion_until_its_registration_completes(
    registry,
):
    from tai import tags

    run_id = registry.create_run("register", {})
    registry.log_weights(run_id, _state(), CONFIG)
    done = registry.register(f"runs:/{run_id}/weights", run_id, {})
    other = registry.create_run("register", {})
    registry.log_weights(other, _state(1), CONFIG)

    pending = registry.register(f"runs:/{other}/weights", other, {}, complete=False)

    assert registry.get_version(done).tags[tags.REGISTRATION] == tags.REGISTRATION_COMPLETE
    assert registry.get_version(pending).tags[tags.REGISTRATION] == tags.REGISTRATION_PENDING
    assert [v.version for v in registry.list_versions()] == [done]
    assert [v.version for v in registry.incomplete_versions()] == [pending]
    found = registry.version_of_run(other)  # a retry finds it, and sees it is not complete
    assert found.version == pending and not found.complete
    # An alias set behind the store's back on a pending version is not a champion.
    registry.client.set_registered_model_alias(registry.model_name, "champion", pending)
    assert registry.champion() is None

    registry.complete_registration(pending)

    assert [v.version for v in registry.list_versions()] == [done, pending]
    assert registry.champion().version == pending
    assert registry.incomplete_versions() == []


def test_set_champion_completes_the_version_first(registry):
    run_id = registry.create_run("register", {})
    registry.log_weights(run_id, _state(), CONFIG)
    version = registry.register(f"runs:/{run_id}/weights", run_id, {}, complete=False)

    registry.set_champion(version)  # e.g. `tai approve` of a version whose flow run died

    assert registry.champion().version == version and registry.champion().complete


def test_a_version_registered_before_the_registration_tag_existed_counts_as_complete(registry):
    run_id = registry.create_run("legacy", {})
    registry.log_weights(run_id, _state(), CONFIG)
    registry.client.create_registered_model(registry.model_name)
    legacy = registry.client.create_model_version(
        registry.model_name, f"runs:/{run_id}/weights", run_id=run_id, tags={"old": "yes"}
    )
    registry.set_champion(str(legacy.version))

    assert [v.version for v in registry.list_versions()] == [str(legacy.version)]
    assert registry.champion().version == str(legacy.version)


# --- a run is marked FAILED though the server is briefly away (BUG-4) --------------------


def _flaky(real, failures: int, calls: list):
    """``real``, failing its first ``failures`` calls as an unreachable server does."""
    from mlflow.exceptions import MlflowException

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) <= failures:
            raise MlflowException(
                "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/update failed with "
                "exception HTTPConnectionPool: Max retries exceeded (Connection refused)"
            )
        return real(*args, **kwargs)

    return call


def test_end_run_tries_again_while_the_server_does_not_answer(store, monkeypatch):
    run_id = store.create_run("flaky", {})
    calls: list = []
    monkeypatch.setattr(
        store.client, "set_terminated", _flaky(store.client.set_terminated, 2, calls)
    )

    store.end_run(run_id, failed=True, retry_for_s=30)

    assert len(calls) == 3
    assert store.client.get_run(run_id).info.status == "FAILED"


def test_end_run_gives_up_after_its_time_and_at_once_on_an_answer(store, monkeypatch):
    from mlflow.exceptions import MlflowException

    run_id = store.create_run("flaky", {})
    calls: list = []
    monkeypatch.setattr(
        store.client, "set_terminated", _flaky(store.client.set_terminated, 99, calls)
    )
    with pytest.raises(MlflowException, match="Connection refused"):
        store.end_run(run_id, failed=True)  # no time given: one try
    assert len(calls) == 1
    monkeypatch.undo()

    started = time.monotonic()
    with pytest.raises(MlflowException) as answer:
        store.end_run("0" * 32, failed=True, retry_for_s=30)  # no such run: an answer
    assert answer.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert time.monotonic() - started < 5


# --- a full artifact store is named as the cause (BUG-8) ---------------------------------


@pytest.fixture
def full_store(monkeypatch):
    """Every upload to the (local) artifact store fails as a full one behind a tracking
    server does: the client sees only HTTP 500s."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    def refuse(self, local, artifact_path=None):
        raise MlflowException(
            "API request to http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/x failed "
            "with exception HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries "
            "exceeded (Caused by ResponseError('too many 500 error responses'))"
        )

    monkeypatch.setattr(LocalArtifactRepository, "log_artifact", refuse)
    monkeypatch.setattr(LocalArtifactRepository, "log_artifacts", refuse)


def test_a_full_artifact_store_is_named_with_the_file_and_its_size(store, full_store, tmp_path):
    run_id = store.create_run("full", {})
    uri = store.client.get_run(run_id).info.artifact_uri
    report = tmp_path / "report.html"
    report.write_text("<p>trust report</p>" * 100)

    with pytest.raises(RegistryError) as weights:
        store.log_weights(run_id, _state(), CONFIG)
    with pytest.raises(RegistryError) as file:
        store.log_file(run_id, report, "tai")
    with pytest.raises(RegistryError) as text:
        store.log_json(run_id, {"a": 1}, "tai/gate_decision.json")

    assert type(weights.value).__name__ == "ArtifactStoreError"
    assert re.fullmatch(
        rf"the artifact store at {re.escape(uri)} refused weights/state_dict\.pt "
        r"\(\d+ bytes\): is it full\? see the tracking server's log",
        str(weights.value),
    ), str(weights.value)
    assert str(file.value) == (
        f"the artifact store at {uri} refused tai/report.html ({report.stat().st_size} bytes): "
        "is it full? see the tracking server's log"
    )
    assert "refused tai/gate_decision.json (" in str(text.value)
    assert "\n" not in str(weights.value)  # one line, as the CLI prints it


def test_an_upload_that_fails_with_the_server_down_keeps_its_own_error(
    store, full_store, monkeypatch, tmp_path
):
    from mlflow.exceptions import MlflowException

    run_id = store.create_run("down", {})
    path = tmp_path / "f.txt"
    path.write_text("x")

    def down(*args, **kwargs):
        raise MlflowException("API request failed (Connection refused)")

    monkeypatch.setattr(store.client, "get_run", down)
    with pytest.raises(MlflowException, match="too many 500 error responses"):
        store.log_file(run_id, path)
