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
    from prefect import flow
    from prefect.server.api.server import SubprocessASGIServer

    from flows import prefect_server

    prefect_server.start_early()
    prefect_server.start_early()  # a second call starts nothing more
    prefect_server.wait_until_started()
    server = SubprocessASGIServer()
    assert server.running and server.server_process.poll() is None, "not started"
    pid = server.server_process.pid

    @flow
    def hello() -> str:
        return "hi"

    assert hello() == "hi"
    assert SubprocessASGIServer().server_process.pid == pid, "the flow started another"
    print("one server", pid)
    """
)


@pytest.mark.integration
def test_the_early_server_is_the_one_the_first_flow_uses(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env["PREFECT_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
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
