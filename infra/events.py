"""The Prefect event that says "new data was merged", and the lakeFS action that causes it.

One event, ``tai.data.merged``, starts event-driven retraining. Its resource names the
branch that received the merge (``tai.data.<store>.<repository>.<branch>``) and its payload
carries the merge commit, so a deployment trigger can match one branch and pass the commit
on as the flow's ``commit`` parameter. The lakeFS webhook receiver (:mod:`infra.webhook`)
and the embedded store's ``tai data merge`` both emit it through :func:`emit_data_merged`.

Example:
    >>> event = data_merged_event("oxen", "data", "main", "abc123", "fix-labels")
    >>> event["resource"]["prefect.resource.id"]
    'tai.data.oxen.data.main'
    >>> event["payload"]["commit_id"]
    'abc123'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tai import tags

EVENT_DATA_MERGED = "tai.data.merged"
EVENT_MONITOR_ALARM = "tai.monitor.alarm"
STORES = ("oxen", "lakefs")

# Dots separate the parts of a resource id, and whitespace would not survive templating.
_NAME = re.compile(r"^[^\s.]+$")
_ACTION_FILE = Path(__file__).resolve().parent / "lakefs" / "_lakefs_actions" / "tai-retrain.yaml"
# The lakeFS path the action file must be uploaded to; lakeFS reads actions only there.
ACTION_PATH = "_lakefs_actions/tai-retrain.yaml"
URL_PLACEHOLDER = "http://tai-webhook.invalid:8787/webhooks/lakefs"


class EventError(ValueError):
    """An argument of a data event is wrong; the message names it and what to pass."""


def data_resource_id(store: str, repository: str, branch: str) -> str:
    """The Prefect resource id of one branch of one data repository.

    Raises:
        EventError: if ``store`` is not a known store, or a name is empty or holds a dot or
            whitespace (dots separate the parts of the id).
    """
    if store not in STORES:
        raise EventError(f"store must be one of {', '.join(STORES)}; got {store!r}")
    for argument, value in (("repository", repository), ("branch", branch)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise EventError(
                f"{argument} must be a non-empty name without dots or whitespace "
                f"(it becomes part of the resource id tai.data.<store>.<repository>.<branch>); "
                f"got {value!r}"
            )
    return f"tai.data.{store}.{repository}.{branch}"


def data_merged_event(
    store: str,
    repository: str,
    branch: str,
    commit_id: str,
    merge_source: str | None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``event``, ``resource`` and ``payload`` of one ``tai.data.merged`` event.

    Args:
        store: ``oxen`` or ``lakefs``.
        repository: the data repository that received the merge.
        branch: the branch that received the merge (the destination).
        commit_id: the commit the merge created; the pipeline is pinned to it.
        merge_source: the branch or commit that was merged in, if known.
        metadata: anything else worth keeping with the event (committer, message, ...).

    Returns:
        Keyword arguments for :func:`prefect.events.emit_event`.

    Raises:
        EventError: if a name or the commit id is malformed.
    """
    resource_id = data_resource_id(store, repository, branch)
    if not isinstance(commit_id, str) or not commit_id.strip():
        raise EventError(f"commit_id must be a non-empty commit id; got {commit_id!r}")
    if merge_source is not None and not isinstance(merge_source, str):
        raise EventError(f"merge_source must be a string or None; got {merge_source!r}")
    return {
        "event": EVENT_DATA_MERGED,
        "resource": {
            "prefect.resource.id": resource_id,
            "prefect.resource.name": f"{repository}@{branch}",
            tags.DATA_STORE: store,
            tags.DATA_REPOSITORY: repository,
            tags.DATA_BRANCH: branch,
        },
        "payload": {
            "store": store,
            "repository": repository,
            "branch": branch,
            "commit_id": commit_id.strip(),
            "merge_source": merge_source,
            "metadata": dict(metadata or {}),
        },
    }


def emit_data_merged(
    store: str,
    repository: str,
    branch: str,
    commit_id: str,
    merge_source: str | None,
    metadata: dict[str, Any] | None = None,
) -> str | None:
    """Emit ``tai.data.merged`` to Prefect; returns the event id, or None if Prefect emits nothing.

    Prefect sends events from a background worker and drains it when the process exits,
    so a short CLI process that emits and quits still delivers. The event only reaches
    deployments served against the same Prefect API (``PREFECT_API_URL``).
    """
    from prefect.events import emit_event

    event = emit_event(
        **data_merged_event(store, repository, branch, commit_id, merge_source, metadata)
    )
    return str(event.id) if event is not None else None


def monitor_alarm_event(
    model_name: str, version: str, batch_id: str, reasons: list[str], review_branch: str
) -> dict[str, Any]:
    """The ``tai.monitor.alarm`` event's arguments for ``prefect.events.emit_event``: the
    resource is the model version (``tai.model.<name>.<version>``)."""
    for argument, value in (("model_name", model_name), ("version", version)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise EventError(
                f"{argument} must be a non-empty name without dots or whitespace; got {value!r}"
            )
    return {
        "event": EVENT_MONITOR_ALARM,
        "resource": {
            "prefect.resource.id": f"tai.model.{model_name}.{version}",
            "prefect.resource.name": f"{model_name} version {version}",
        },
        "payload": {
            "model_name": model_name,
            "version": version,
            "batch_id": batch_id,
            "reasons": list(reasons),
            "review_branch": review_branch or None,
        },
    }


def emit_monitor_alarm(
    model_name: str, version: str, batch_id: str, reasons: list[str], review_branch: str
) -> str | None:
    """Emit ``tai.monitor.alarm`` to Prefect; returns the event id, or None if none was
    emitted. Automations on it (a message to the team, a paused deployment) react."""
    from prefect.events import emit_event

    event = emit_event(**monitor_alarm_event(model_name, version, batch_id, reasons, review_branch))
    return str(event.id) if event is not None else None


def prefect_api_url() -> str | None:
    """The Prefect API this process talks to, or None for Prefect's ephemeral in-process API."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def require_prefect_api(what: str) -> str:
    """The configured Prefect API URL; raises if there is none.

    Events and triggers only meet when every process talks to the same Prefect server;
    Prefect's ephemeral API lives inside one process, so an event emitted there is lost.

    Raises:
        EventError: if ``PREFECT_API_URL`` is not set.
    """
    url = prefect_api_url()
    if not url:
        raise EventError(
            f"{what} needs a running Prefect server shared by the webhook, `tai data merge` "
            "and the served deployments; start one with `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return url


def action_file() -> Path:
    """The lakeFS action file (YAML) that posts ``post-merge`` events on ``main`` to the webhook.

    Upload it as :data:`ACTION_PATH` on a branch and commit; lakeFS runs it for merges into
    ``main`` once it is on ``main``. Its ``url`` is a placeholder: lakeFS does not expand
    environment variables in ``url``, so use :func:`render_action` to fill in the receiver.
    """
    return _ACTION_FILE


def render_action(webhook_url: str) -> str:
    """The action file's text with the receiver's URL filled in.

    Args:
        webhook_url: where lakeFS reaches the receiver, e.g. ``http://tai:8787/webhooks/lakefs``.

    Raises:
        EventError: if the URL is not an http(s) URL.
    """
    if not isinstance(webhook_url, str) or not re.match(r"^https?://[^\s/]+", webhook_url):
        raise EventError(
            "webhook_url must be the http(s) URL at which lakeFS reaches the receiver, "
            f"e.g. http://tai-host:8787/webhooks/lakefs; got {webhook_url!r}"
        )
    text = action_file().read_text()
    if URL_PLACEHOLDER not in text:
        raise EventError(f"{action_file()} no longer holds the URL placeholder {URL_PLACEHOLDER}")
    return text.replace(URL_PLACEHOLDER, webhook_url)
