"""The lakeFS webhook receiver: a ``post-merge`` hook call becomes the ``tai.data.merged`` event.

lakeFS runs the action in ``infra/lakefs/_lakefs_actions/tai-retrain.yaml`` after every merge
into ``main``: it POSTs a JSON description of the merge (``event_type``, ``repository_id``,
``branch_id``, ``commit_id``, ``merge_source``, ...) with a shared secret in the
``X-TAI-Webhook-Secret`` header. The receiver checks the secret in constant time, checks the
body, and emits one Prefect event per ``(repository, commit id)``; a deployment trigger on that
event runs the pipeline on the merge commit (see :mod:`flows.deployments`).

The secret is never logged and never part of a response.

Example:
    >>> from fastapi.testclient import TestClient
    >>> sent = []
    >>> app = create_app(secret="s3cret", emit=lambda **kw: sent.append(kw) or "id-1")
    >>> TestClient(app).get("/health").json()
    {'status': 'ok'}
"""

from __future__ import annotations

import hmac
import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra.events import (
    EVENT_DATA_MERGED,
    STORES,
    EventError,
    data_resource_id,
    emit_data_merged,
    require_prefect_api,
)

SECRET_HEADER = "X-TAI-Webhook-Secret"
LAKEFS_PATH = "/webhooks/lakefs"
ACCEPTED_EVENT_TYPES = ("post-merge",)

log = logging.getLogger("tai.webhook")


class LakeFSHookEvent(BaseModel):
    """The body lakeFS sends to a webhook hook (its ``EventInfo``); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    event_type: str = Field(min_length=1)
    repository_id: str = Field(min_length=1)
    branch_id: str = Field(min_length=1)
    commit_id: str = Field(min_length=1)
    event_time: str | None = None
    action_name: str | None = None
    hook_id: str | None = None
    source_ref: str | None = None
    merge_source: str | None = None
    commit_message: str | None = None
    committer: str | None = None
    commit_metadata: dict[str, str] | None = None


class IdempotencyStore:
    """The ``(repository, commit id)`` pairs already turned into events, so replays emit nothing.

    Backed by SQLite: a file in the workspace survives restarts (and is shared by several
    receiver processes); without a path it lives in memory. Safe to use from several threads.

    Args:
        path: the SQLite file, created with its folder on first use; None keeps it in memory.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            target = str(self.path) if self.path is not None else ":memory:"
            conn = sqlite3.connect(target, timeout=10, check_same_thread=False)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS seen (repository TEXT NOT NULL, commit_id TEXT NOT "
                "NULL, received_at TEXT NOT NULL, PRIMARY KEY (repository, commit_id))"
            )
            conn.commit()
            self._conn = conn
        return self._conn

    def claim(self, repository: str, commit_id: str) -> bool:
        """Record the pair; True if it was new, False if it had been claimed before."""
        with self._lock:
            conn = self._connection()
            cursor = conn.execute(
                "INSERT OR IGNORE INTO seen VALUES (?, ?, ?)",
                (repository, commit_id, datetime.now(UTC).isoformat()),
            )
            conn.commit()
            return cursor.rowcount == 1

    def release(self, repository: str, commit_id: str) -> None:
        """Forget a claim (the event could not be emitted), so a retry can emit it."""
        with self._lock:
            conn = self._connection()
            conn.execute(
                "DELETE FROM seen WHERE repository = ? AND commit_id = ?", (repository, commit_id)
            )
            conn.commit()

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT 1 FROM seen WHERE repository = ? AND commit_id = ?", key)
                .fetchone()
            )
            return row is not None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def create_app(
    *,
    secret: str,
    emit: Callable[..., object] = emit_data_merged,
    store: str = "lakefs",
    max_body_bytes: int = 64 * 1024,
    seen: IdempotencyStore | None = None,
) -> FastAPI:
    """The receiver as a FastAPI app: ``POST /webhooks/lakefs`` and ``GET /health``.

    Args:
        secret: the shared secret lakeFS sends in ``X-TAI-Webhook-Secret``.
        emit: called with ``store, repository, branch, commit_id, merge_source, metadata``
            keyword arguments; returns the event id (None means nothing was emitted).
        store: the store name that goes into the event's resource id.
        max_body_bytes: larger bodies are refused with 413 (lakeFS sends well under 4 KiB).
        seen: remembers emitted ``(repository, commit id)`` pairs; in memory by default.

    Raises:
        ValueError: if the secret is empty, the store unknown or the size limit not positive.

    Responses of ``POST /webhooks/lakefs``: 202 accepted (event emitted), 200 duplicate
    (emitted before, nothing emitted now), 401 wrong or missing secret, 400 body not JSON,
    413 body too large, 415 not ``application/json``, 422 missing or wrong fields or an
    event type other than ``post-merge``, 503 the event could not be emitted.
    """
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError(
            "secret must be a non-empty string (the value lakeFS sends in "
            f"{SECRET_HEADER}); set TAI_WEBHOOK_SECRET"
        )
    if store not in STORES:
        raise ValueError(f"store must be one of {', '.join(STORES)}; got {store!r}")
    if not isinstance(max_body_bytes, int) or max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be a positive int; got {max_body_bytes!r}")
    expected = secret.encode()
    seen = seen if seen is not None else IdempotencyStore()

    app = FastAPI(title="TAI webhook receiver", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(LAKEFS_PATH)
    async def lakefs_hook(request: Request) -> JSONResponse:
        if not _secret_matches(request.headers.get(SECRET_HEADER), expected):
            client = request.client.host if request.client else "unknown"
            log.warning("refused a lakeFS hook call from %s: wrong or missing secret", client)
            raise HTTPException(
                401,
                f"wrong or missing {SECRET_HEADER} header; set it in the lakeFS action to "
                "{{ ENV.LAKEFSACTION_TAI_WEBHOOK_SECRET }} and give that variable the "
                "receiver's secret",
            )
        _check_content_type(request.headers.get("content-type"))
        body = await _read_body(request, max_body_bytes)
        hook = _parse_hook_event(body)
        try:
            resource = data_resource_id(store, hook.repository_id, hook.branch_id)
        except EventError as exc:
            raise HTTPException(422, str(exc)) from None

        if not seen.claim(hook.repository_id, hook.commit_id):
            log.info("duplicate post-merge for %s at %s: nothing emitted", resource, hook.commit_id)
            return JSONResponse(
                {"status": "duplicate", "commit_id": hook.commit_id, "resource": resource},
                status_code=200,
            )
        try:
            event_id = await run_in_threadpool(
                emit,
                store=store,
                repository=hook.repository_id,
                branch=hook.branch_id,
                commit_id=hook.commit_id,
                merge_source=hook.merge_source or hook.source_ref,
                metadata=_metadata(hook),
            )
        except Exception as exc:
            seen.release(hook.repository_id, hook.commit_id)
            log.error("could not emit %s for %s: %s", EVENT_DATA_MERGED, resource, exc)
            raise HTTPException(
                503,
                f"could not emit {EVENT_DATA_MERGED} to Prefect ({type(exc).__name__}); check "
                "that the Prefect server at PREFECT_API_URL is up, then re-run the hook",
            ) from None
        if event_id is None:
            seen.release(hook.repository_id, hook.commit_id)
            raise HTTPException(
                503,
                f"Prefect emitted no {EVENT_DATA_MERGED} event (events are off in this "
                "process); set PREFECT_API_URL to the server the deployments are served on",
            )
        log.info("emitted %s for %s at %s", EVENT_DATA_MERGED, resource, hook.commit_id)
        return JSONResponse(
            {
                "status": "accepted",
                "event": EVENT_DATA_MERGED,
                "event_id": str(event_id),
                "resource": resource,
                "commit_id": hook.commit_id,
            },
            status_code=202,
        )

    return app


def serve_webhook(
    host: str = "127.0.0.1",
    port: int = 8787,
    *,
    secret: str,
    workspace: Path | None = None,
    store: str = "lakefs",
    log_level: str = "info",
) -> None:
    """Run the receiver with uvicorn until interrupted (blocking).

    Args:
        host: the interface to listen on; keep 127.0.0.1 unless lakeFS runs elsewhere.
        port: the port to listen on.
        secret: the shared secret (``TAI_WEBHOOK_SECRET``).
        workspace: where the replay memory (``webhook/seen.sqlite``) is kept; None keeps it
            in memory, so a restart forgets which commits were seen.
        store: the store name in the event's resource id.
        log_level: uvicorn's log level.

    Raises:
        EventError: if no Prefect server is configured (``PREFECT_API_URL``).
        ValueError: if the secret is empty or the store unknown.
    """
    import uvicorn

    require_prefect_api("the lakeFS webhook receiver")
    seen = IdempotencyStore(Path(workspace) / "webhook" / "seen.sqlite" if workspace else None)
    app = create_app(secret=secret, store=store, seen=seen)
    log.info("lakeFS webhook receiver on http://%s:%s%s", host, port, LAKEFS_PATH)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _secret_matches(received: str | None, expected: bytes) -> bool:
    # compare_digest on bytes: on str it refuses non-ASCII, which a forger controls.
    return received is not None and hmac.compare_digest(received.encode(), expected)


def _check_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(
            415,
            f"the body must be JSON with Content-Type application/json (as lakeFS sends it); "
            f"got Content-Type {content_type or 'none'!r}",
        )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPException(400, f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise HTTPException(413, _too_large(limit, f"Content-Length says {size} bytes"))
    # The header can lie (or be absent with chunked encoding): count what actually arrives.
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HTTPException(413, _too_large(limit, f"received more than {limit} bytes"))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int, what: str) -> str:
    return f"the body is larger than the {limit}-byte limit ({what}); a lakeFS event is far smaller"


def _parse_hook_event(body: bytes) -> LakeFSHookEvent:
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(
            400, f"the body is not valid JSON ({exc}); send lakeFS's event"
        ) from None
    if not isinstance(data, dict):
        raise HTTPException(
            400, f"the body must be a JSON object (lakeFS's event); got {type(data).__name__}"
        )
    event_type = data.get("event_type")
    if event_type is not None and event_type not in ACCEPTED_EVENT_TYPES:
        raise HTTPException(
            422,
            f"event_type {event_type!r} is not handled; this receiver accepts "
            f"{', '.join(ACCEPTED_EVENT_TYPES)}: set `on: post-merge` in the lakeFS action",
        )
    try:
        return LakeFSHookEvent.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, _describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    missing = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing"]
    wrong = [
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
        for e in exc.errors()
        if e["type"] != "missing"
    ]
    parts = []
    if missing:
        parts.append(f"missing field(s): {', '.join(missing)}")
    if wrong:
        parts.append(f"wrong field(s): {'; '.join(wrong)}")
    return (
        "; ".join(parts) + "; a lakeFS post-merge event carries event_type, repository_id, "
        "branch_id and commit_id as strings"
    )


def _metadata(hook: LakeFSHookEvent) -> dict[str, Any]:
    fields = ("event_time", "action_name", "hook_id", "source_ref", "commit_message", "committer")
    meta: dict[str, Any] = {k: v for k in fields if (v := getattr(hook, k)) is not None}
    if hook.commit_metadata:
        meta["commit_metadata"] = hook.commit_metadata
    return meta
