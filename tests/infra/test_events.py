"""The `tai.data.merged` event, its emission through Prefect, and the lakeFS action file."""

from __future__ import annotations

import time

import pytest
import yaml

from infra.events import (
    ACTION_PATH,
    EVENT_DATA_MERGED,
    URL_PLACEHOLDER,
    EventError,
    action_file,
    data_merged_event,
    data_resource_id,
    emit_data_merged,
    render_action,
    require_prefect_api,
)


@pytest.fixture
def asserting_events(monkeypatch):
    """Prefect's asserting events client: emitted events are recorded, not sent.

    The API URL points at a closed port so the events worker's orchestration client does
    not start Prefect's ephemeral server (slow, and it shares the session's database).
    """
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    AssertingEventsClient.reset()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        worker = EventsWorker.instance(AssertingEventsClient)
        monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
        yield worker
        EventsWorker.drain_all(timeout=10)


def recorded_events(count: int = 1, timeout: float = 10) -> list:
    """The events the asserting client received, once ``count`` arrived (bounded wait)."""
    from prefect.events.clients import AssertingEventsClient

    deadline = time.monotonic() + timeout
    while True:
        events = [e for c in AssertingEventsClient.all for e in getattr(c, "events", [])]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_the_event_names_the_branch_as_resource_and_carries_commit_and_source():
    event = data_merged_event(
        "lakefs", "images", "main", "c0ffee", "fix-labels", {"committer": "ana"}
    )
    assert event["event"] == EVENT_DATA_MERGED == "tai.data.merged"
    assert event["resource"]["prefect.resource.id"] == "tai.data.lakefs.images.main"
    assert event["resource"]["tai.data.branch"] == "main"
    assert event["payload"] == {
        "store": "lakefs",
        "repository": "images",
        "branch": "main",
        "commit_id": "c0ffee",
        "merge_source": "fix-labels",
        "metadata": {"committer": "ana"},
    }


def test_a_merge_without_a_known_source_has_none():
    assert data_merged_event("oxen", "data", "main", "abc", None)["payload"]["merge_source"] is None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("s3", "data", "main"), r"store must be one of oxen, lakefs; got 's3'"),
        (
            ("oxen", "my.data", "main"),
            r"repository must be a non-empty name without dots.*'my.data'",
        ),
        (("oxen", "data", ""), r"branch must be a non-empty name without dots.*got ''"),
        (("oxen", "data", "feature x"), r"branch must be .*whitespace.*'feature x'"),
    ],
)
def test_names_that_cannot_form_a_resource_id_are_refused(args, match):
    with pytest.raises(EventError, match=match):
        data_resource_id(*args)


def test_an_empty_commit_id_is_refused():
    with pytest.raises(EventError, match=r"commit_id must be a non-empty commit id; got ' '"):
        data_merged_event("oxen", "data", "main", " ", None)


def test_a_non_string_merge_source_is_refused():
    with pytest.raises(EventError, match=r"merge_source must be a string or None; got 3"):
        data_merged_event("oxen", "data", "main", "abc", 3)


def test_emit_sends_one_prefect_event_and_returns_its_id(asserting_events):
    event_id = emit_data_merged("oxen", "data", "main", "abc123", "new-scans")
    events = recorded_events()
    assert len(events) == 1
    sent = events[0]
    assert str(sent.id) == event_id
    assert sent.event == "tai.data.merged"
    assert sent.resource.id == "tai.data.oxen.data.main"
    assert sent.payload["commit_id"] == "abc123"
    assert sent.payload["merge_source"] == "new-scans"


def test_serving_without_a_prefect_server_is_refused():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(EventError, match=r"needs a running Prefect server.*PREFECT_API_URL="):
            require_prefect_api("the test")


def test_the_lakefs_action_posts_post_merge_on_main_with_the_secret_header():
    action = yaml.safe_load(action_file().read_text())
    assert action["name"] == "tai-retrain"
    assert action["on"] == {"post-merge": {"branches": ["main"]}}
    (hook,) = action["hooks"]
    assert hook["type"] == "webhook" and hook["id"]
    props = hook["properties"]
    assert props["url"] == URL_PLACEHOLDER and props["url"].endswith("/webhooks/lakefs")
    # lakeFS expands {{ ENV.X }} in headers only for variables named LAKEFSACTION_*.
    assert props["headers"] == {"X-TAI-Webhook-Secret": "{{ ENV.LAKEFSACTION_TAI_WEBHOOK_SECRET }}"}
    assert ACTION_PATH == "_lakefs_actions/tai-retrain.yaml"
    assert action_file().name == "tai-retrain.yaml"


def test_rendering_fills_in_the_receiver_url_and_keeps_the_rest():
    text = render_action("http://tai.internal:8787/webhooks/lakefs")
    action = yaml.safe_load(text)
    hook = action["hooks"][0]
    assert hook["properties"]["url"] == "http://tai.internal:8787/webhooks/lakefs"
    assert hook["properties"]["headers"]["X-TAI-Webhook-Secret"].startswith("{{ ENV.")
    assert action["on"] == yaml.safe_load(action_file().read_text())["on"]


@pytest.mark.parametrize("url", ["", "tai:8787/webhooks/lakefs", "ftp://tai/x", None])
def test_rendering_refuses_what_is_not_an_http_url(url):
    with pytest.raises(EventError, match=r"webhook_url must be the http\(s\) URL"):
        render_action(url)


def test_rendering_refuses_an_action_file_that_lost_its_placeholder(tmp_path, monkeypatch):
    import infra.events

    edited = tmp_path / "tai-retrain.yaml"
    edited.write_text(action_file().read_text().replace(URL_PLACEHOLDER, "http://fixed/x"))
    monkeypatch.setattr(infra.events, "_ACTION_FILE", edited)
    with pytest.raises(EventError, match="no longer holds the URL placeholder"):
        render_action("http://tai.internal:8787/webhooks/lakefs")
