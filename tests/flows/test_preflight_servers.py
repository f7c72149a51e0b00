"""A run whose servers do not answer stops in one line naming the server, before anything
trains (RELIABILITY.md, BUG-7)."""

from __future__ import annotations

import http.server
import threading

import pytest

from flows.preflight import ServerUnreachable, check_servers
from infra.settings import load_settings


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def health_server():
    """A server on 127.0.0.1: 200 on /health, 503 on a path holding "sick"."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(503 if "sick" in self.path else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_local_tracking_store_needs_no_server(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    check_servers(load_settings(workspace=tmp_path))  # sqlite: nothing to ask


def test_answering_servers_pass(tmp_path, monkeypatch, health_server):
    monkeypatch.setenv("PREFECT_API_URL", f"{health_server}/api")
    check_servers(load_settings(workspace=tmp_path, mlflow_tracking_uri=health_server))


def test_an_unreachable_tracking_server_is_named_with_how_to_start_it(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    dead = f"http://127.0.0.1:{_free_port()}"
    settings = load_settings(workspace=tmp_path, mlflow_tracking_uri=dead)
    with pytest.raises(ServerUnreachable) as info:
        check_servers(settings, timeout=2)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"the MLflow tracking server at {dead}/health does not answer (")
    assert "TAI_MLFLOW_TRACKING_URI" in message


def test_an_unreachable_prefect_api_is_named(tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{_free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", dead)
    with pytest.raises(ServerUnreachable, match=rf"^the Prefect API at {dead}/health does not"):
        check_servers(load_settings(workspace=tmp_path), timeout=2)


def test_a_server_answering_an_error_is_refused(tmp_path, monkeypatch, health_server):
    monkeypatch.setenv("PREFECT_API_URL", f"{health_server}/sick")
    with pytest.raises(ServerUnreachable, match=r"\(HTTP 503\)"):
        check_servers(load_settings(workspace=tmp_path), timeout=2)
