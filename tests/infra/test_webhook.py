"""The lakeFS webhook receiver, driven with lakeFS's documented request body."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from fastapi.testclient import TestClient

from infra.events import EventError
from infra.webhook import SECRET_HEADER, IdempotencyStore, create_app, serve_webhook

# The asserting events fixture is shared with the event tests.
from tests.infra.test_events import asserting_events, recorded_events  # noqa: F401

SECRET = "correct horse battery staple"
URL = "/webhooks/lakefs"


def lakefs_event(**overrides):
    """A post-merge body as lakeFS sends it (pkg/actions EventInfo, docs: Webhooks)."""
    body = {
        "event_type": "post-merge",
        "event_time": "2025-11-28T07:52:00Z",
        "action_name": "tai-retrain",
        "hook_id": "tai_retrain_webhook",
        "repository_id": "images",
        "branch_id": "main",
        "source_ref": "fix-labels",
        "merge_source": "fix-labels",
        "commit_message": "Merge 'fix-labels' into 'main'",
        "commit_id": "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
        "committer": "ana",
        "commit_metadata": {"ticket": "DATA-12"},
    }
    body.update(overrides)
    return body


class RecordingEmit:
    def __init__(self, result="event-1", error=None):
        self.calls, self.result, self.error = [], result, error

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def emit():
    return RecordingEmit()


@pytest.fixture
def client(emit):
    return TestClient(create_app(secret=SECRET, emit=emit, store="lakefs"))


def post(client, body, secret=SECRET, **kwargs):
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    headers.update(kwargs.pop("headers", {}))
    return client.post(URL, json=body, headers=headers, **kwargs)


def test_a_post_merge_with_the_right_secret_emits_one_event(client, emit, caplog):
    caplog.set_level(logging.DEBUG)
    response = post(client, lakefs_event())
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted" and body["event_id"] == "event-1"
    assert body["resource"] == "tai.data.lakefs.images.main"
    assert emit.calls == [
        {
            "store": "lakefs",
            "repository": "images",
            "branch": "main",
            "commit_id": lakefs_event()["commit_id"],
            "merge_source": "fix-labels",
            "metadata": {
                "event_time": "2025-11-28T07:52:00Z",
                "action_name": "tai-retrain",
                "hook_id": "tai_retrain_webhook",
                "source_ref": "fix-labels",
                "commit_message": "Merge 'fix-labels' into 'main'",
                "committer": "ana",
                "commit_metadata": {"ticket": "DATA-12"},
            },
        }
    ]
    assert SECRET not in response.text and SECRET not in caplog.text


def test_an_older_lakefs_without_merge_source_falls_back_to_source_ref(client, emit):
    body = lakefs_event(source_ref="feature-1")
    del body["merge_source"]
    assert post(client, body).status_code == 202
    assert emit.calls[0]["merge_source"] == "feature-1"


@pytest.mark.parametrize("secret", ["wrong", "", None, "correct horse battery stapl€".encode()])
def test_a_forged_or_missing_secret_is_refused_and_emits_nothing(client, emit, secret, caplog):
    response = post(client, lakefs_event(), secret=secret)
    assert response.status_code == 401
    assert "wrong or missing X-TAI-Webhook-Secret header" in response.json()["detail"]
    assert emit.calls == []
    assert SECRET not in response.text and SECRET not in caplog.text


def test_the_secret_is_checked_before_the_body(client, emit):
    response = client.post(URL, content=b"not json", headers={"content-type": "text/plain"})
    assert response.status_code == 401 and emit.calls == []


@pytest.mark.parametrize("field", ["event_type", "repository_id", "branch_id", "commit_id"])
def test_a_missing_field_is_named(client, emit, field):
    body = lakefs_event()
    del body[field]
    response = post(client, body)
    assert response.status_code == 422
    assert f"missing field(s): {field}" in response.json()["detail"]
    assert emit.calls == []


def test_a_field_of_the_wrong_type_is_named(client, emit):
    response = post(client, lakefs_event(branch_id=5, commit_id=""))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "wrong field(s): branch_id: Input should be a valid string" in detail
    assert "commit_id: String should have at least 1 character" in detail
    assert emit.calls == []


@pytest.mark.parametrize("event_type", ["post-commit", "pre-merge"])
def test_an_event_type_other_than_post_merge_is_refused(client, emit, event_type):
    response = post(client, lakefs_event(event_type=event_type))
    assert response.status_code == 422
    assert response.json()["detail"] == (
        f"event_type '{event_type}' is not handled; this receiver accepts post-merge: "
        "set `on: post-merge` in the lakeFS action"
    )
    assert emit.calls == []


def test_a_repository_name_that_cannot_be_a_resource_id_is_refused(client, emit):
    response = post(client, lakefs_event(repository_id="my.repo"))
    assert response.status_code == 422
    assert "repository must be a non-empty name without dots" in response.json()["detail"]
    assert emit.calls == []


def test_a_body_that_is_not_json_is_refused(client, emit):
    headers = {SECRET_HEADER: SECRET, "content-type": "application/json"}
    response = client.post(URL, content=b"{event_type: post-merge", headers=headers)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("the body is not valid JSON")
    response = client.post(URL, content=b"[1, 2]", headers=headers)
    assert response.status_code == 400
    assert response.json()["detail"] == "the body must be a JSON object (lakeFS's event); got list"
    assert emit.calls == []


def test_a_body_that_is_not_declared_json_is_refused(client, emit):
    headers = {SECRET_HEADER: SECRET, "content-type": "text/plain"}
    response = client.post(URL, content=json.dumps(lakefs_event()), headers=headers)
    assert response.status_code == 415
    assert "Content-Type application/json" in response.json()["detail"]
    assert "'text/plain'" in response.json()["detail"]
    assert emit.calls == []


def test_an_oversized_body_is_refused_by_its_declared_length(emit):
    client = TestClient(create_app(secret=SECRET, emit=emit, max_body_bytes=1024))
    response = post(client, lakefs_event(commit_message="x" * 2000))
    assert response.status_code == 413
    assert "larger than the 1024-byte limit (Content-Length says" in response.json()["detail"]
    assert emit.calls == []


def test_an_oversized_body_is_refused_by_the_bytes_that_arrive(emit):
    client = TestClient(create_app(secret=SECRET, emit=emit, max_body_bytes=1024))
    payload = json.dumps(lakefs_event(commit_message="x" * 2000)).encode()

    def chunks():  # no Content-Length: chunked transfer, as a lying or streaming sender
        for i in range(0, len(payload), 256):
            yield payload[i : i + 256]

    headers = {SECRET_HEADER: SECRET, "content-type": "application/json"}
    response = client.post(URL, content=chunks(), headers=headers)
    assert response.status_code == 413
    assert "received more than 1024 bytes" in response.json()["detail"]
    assert emit.calls == []


def test_a_replay_answers_duplicate_and_emits_nothing(client, emit):
    assert post(client, lakefs_event()).status_code == 202
    replay = post(client, lakefs_event(event_time="2025-11-28T08:00:00Z"))
    assert replay.status_code == 200
    assert replay.json()["status"] == "duplicate"
    assert len(emit.calls) == 1
    # Another commit of the same repository is a new event.
    assert post(client, lakefs_event(commit_id="abc")).status_code == 202
    assert len(emit.calls) == 2


def test_replays_are_remembered_across_restarts_in_the_workspace(tmp_path, emit):
    path = tmp_path / "webhook" / "seen.sqlite"
    first = TestClient(create_app(secret=SECRET, emit=emit, seen=IdempotencyStore(path)))
    assert post(first, lakefs_event()).status_code == 202
    restarted = TestClient(create_app(secret=SECRET, emit=emit, seen=IdempotencyStore(path)))
    assert post(restarted, lakefs_event()).json()["status"] == "duplicate"
    assert len(emit.calls) == 1


def test_a_failed_emit_answers_503_and_a_retry_emits(emit):
    failing = RecordingEmit(error=ConnectionError("connection refused"))
    seen = IdempotencyStore()
    response = post(TestClient(create_app(secret=SECRET, emit=failing, seen=seen)), lakefs_event())
    assert response.status_code == 503
    assert (
        "could not emit tai.data.merged to Prefect (ConnectionError)" in response.json()["detail"]
    )
    retry = post(TestClient(create_app(secret=SECRET, emit=emit, seen=seen)), lakefs_event())
    assert retry.status_code == 202 and len(emit.calls) == 1


def test_an_emit_that_prefect_drops_answers_503(emit):
    dropped = RecordingEmit(result=None)
    response = post(TestClient(create_app(secret=SECRET, emit=dropped)), lakefs_event())
    assert response.status_code == 503
    assert "Prefect emitted no tai.data.merged event" in response.json()["detail"]


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.usefixtures("asserting_events")
def test_the_default_emit_sends_the_prefect_event():
    response = post(TestClient(create_app(secret=SECRET, store="oxen")), lakefs_event())
    assert response.status_code == 202
    (event,) = recorded_events()
    assert str(event.id) == response.json()["event_id"]
    assert event.event == "tai.data.merged"
    assert event.resource.id == "tai.data.oxen.images.main"
    assert event.payload["commit_id"] == lakefs_event()["commit_id"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"secret": ""}, r"secret must be a non-empty string .*TAI_WEBHOOK_SECRET"),
        ({"secret": "  "}, r"secret must be a non-empty string"),
        ({"secret": SECRET, "store": "s3"}, r"store must be one of oxen, lakefs; got 's3'"),
        ({"secret": SECRET, "max_body_bytes": 0}, r"max_body_bytes must be a positive int; got 0"),
    ],
)
def test_wrong_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_app(**kwargs)


def test_serving_without_a_prefect_server_is_refused(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(EventError, match=r"lakeFS webhook receiver needs a running Prefect"):
            serve_webhook(secret=SECRET, workspace=tmp_path)


def test_only_one_of_many_concurrent_claims_wins(tmp_path):
    store = IdempotencyStore(tmp_path / "seen.sqlite")
    results, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait(timeout=10)
        results.append(store.claim("images", "abc"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(results) == [False] * 7 + [True]
    assert ("images", "abc") in store
    store.release("images", "abc")
    assert ("images", "abc") not in store
    store.close()
