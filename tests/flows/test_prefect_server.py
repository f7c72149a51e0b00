"""Prefect's temporary server started early, in the background, is the one flows use."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import os
    import sys

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    from flows import prefect_server

    prefect_server.start_early()
    thread = prefect_server._thread
    prefect_server.start_early()  # a second call starts nothing more
    assert prefect_server._thread is thread
    prefect_server.wait_until_started()
    url = get_current_settings().api.url
    assert url and url.startswith("http://127.0.0.1:"), url
    assert "PREFECT_API_URL" not in os.environ, "the environment was changed"

    @flow
    def hello() -> str:
        return "hi"

    assert hello() == "hi"
    with get_client(sync_client=True) as client:
        assert str(client.api_url).rstrip("/") == url.rstrip("/")
        runs = client.read_flow_runs()
    assert [r.name for r in runs] and runs[0].state.is_completed(), runs
    # the client talked to the early server: Prefect's own temporary server never started
    assert "prefect.server.api.server" not in sys.modules, "the server modules were imported"
    print("one server", url)
    """
)


def _run_script(home) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env["PREFECT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.integration
def test_the_early_server_is_the_one_the_first_flow_uses(tmp_path):
    done = _run_script(tmp_path / "prefect")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "one server" in done.stdout


def _block_schema_ids(db) -> set[str]:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM block_schema")}


@pytest.mark.integration
def test_a_new_workspaces_server_starts_on_a_copy_of_the_migrated_template(tmp_path):
    from infra.db_templates import make_prefect_template, template_path

    template = template_path("prefect")
    if not template.exists():  # `make install` makes it
        make_prefect_template(template)
    home = tmp_path / "prefect"
    home.mkdir()
    done = _run_script(home)
    assert done.returncode == 0, done.stderr[-3000:]
    # the template's rows (their random ids) are there: the server did not migrate anew
    assert _block_schema_ids(template) <= _block_schema_ids(home / "prefect.db")


def test_with_an_api_url_nothing_is_started(monkeypatch):
    from flows import prefect_server

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setattr(prefect_server, "_thread", None)
    prefect_server.start_early()
    assert prefect_server._thread is None
    prefect_server.wait_until_started()  # returns at once


def test_a_server_that_does_not_start_leaves_prefects_settings_as_they_were(monkeypatch):
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    from flows import prefect_server

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(prefect_server, "_thread", None)
    monkeypatch.setattr(prefect_server, "prefect_database", lambda: None)
    launched = []

    def launch(self):  # a server process that exits at once
        self.port = 9
        self.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
        launched.append(self)

    monkeypatch.setattr(prefect_server._Server, "launch", launch)
    try:
        prefect_server.start_early()
        assert get_current_settings().api.url == "http://127.0.0.1:9/api"  # until it fails
        prefect_server.wait_until_started()
        assert get_current_settings().api.url is None  # the first flow starts its own
        assert launched[0].process is None  # stopped
        assert "PREFECT_API_URL" not in os.environ
    finally:
        refresh_global_settings_context()


HEALTHY = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
    """
)


def test_a_taken_port_is_retried_and_the_settings_follow_in_the_callers_thread(monkeypatch):
    """The first launch exits as uvicorn does on a taken port; the second answers /health.
    The settings point at the second port after wait_until_started, and the start thread
    never changed them (it runs while the caller's thread holds the first URL)."""
    import socket
    import threading

    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    from flows import prefect_server

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(prefect_server, "_thread", None)
    monkeypatch.setattr(prefect_server, "prefect_database", lambda: None)
    launched = []
    changed_in = []
    point = prefect_server._point_prefect_at

    def launch(self):
        if not launched:  # as uvicorn exits when its port is taken
            self.port = 9
            self.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        else:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            self.process = subprocess.Popen([sys.executable, "-c", HEALTHY, str(self.port)])
        launched.append(self.port)

    def recorded_point(url):
        changed_in.append(threading.current_thread().name)
        point(url)

    monkeypatch.setattr(prefect_server._Server, "launch", launch)
    monkeypatch.setattr(prefect_server, "_point_prefect_at", recorded_point)
    server = None
    try:
        prefect_server.start_early()
        server = prefect_server._server
        prefect_server.wait_until_started()
        assert len(launched) == 2 and launched[0] == 9
        assert get_current_settings().api.url == f"http://127.0.0.1:{launched[1]}/api"
        assert server.process is not None and server.process.poll() is None  # kept running
        assert changed_in == [threading.current_thread().name] * 2  # start, then the new port
        assert "PREFECT_API_URL" not in os.environ
        prefect_server.wait_until_started()  # settled already: nothing changes
        assert len(changed_in) == 2
    finally:
        if server is not None:
            server.stop()
        refresh_global_settings_context()
