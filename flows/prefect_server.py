"""Start Prefect's temporary server in the background while other start-up work runs.

Without ``PREFECT_API_URL`` the first flow run starts a temporary Prefect server and waits
for it: 5-14 s in `tai demo` (py-spy, 2026-12-04), most of it in the server's own process
(imports, database migrations). :func:`start_early` launches that server's process at the
top of a command, so its start overlaps with checking the inputs or importing the sample,
and points this process's Prefect settings at it; :func:`wait_until_started` waits for
its health check before the first flow. If the early start fails, the settings are put
back and the first flow starts a server itself and reports what is wrong, as before. A
new workspace's database is first copied from the migrated template made at install
(:mod:`infra.db_templates`), which halves the server's start.

The process is launched as Prefect's own ``SubprocessASGIServer`` launches it (uvicorn
on Prefect's app factory, with the same environment), but without importing Prefect's
server modules here: with an API URL set, a Prefect client never imports them, which
spares this process their import (4.0 s under ``python -X importtime``; the demo's first
line came 2 s sooner, 2026-12-04). The URL goes into Prefect's global settings only, not
into ``os.environ``: a ``PREFECT_API_URL`` in the environment means a server the user
runs (checked by :func:`flows.preflight.check_servers`, needed by ``tai serve``), and
child processes keep starting their own as before.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

_thread: threading.Thread | None = None
# The early server until wait_until_started has settled this process's settings on it.
_server: _Server | None = None
# Seconds the server may take to answer its health check (Prefect's own default is 20).
START_TIMEOUT_S = 60.0
# uvicorn's exit status when its port is taken: launched again on another port.
_PORT_IN_USE = 3


class _Server:
    """Prefect's temporary server in a process of its own (see the module docstring)."""

    def __init__(self, environment: dict[str, str]) -> None:
        self.environment = environment
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.healthy = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def launch(self) -> None:
        import prefect

        with socket.socket() as probe:  # a free port now; a race is retried (_PORT_IN_USE)
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(Path(prefect.__file__).parent.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **self.environment,
            },
        )

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Poll ``/health`` until it answers 200 (True), the process dies or time runs out
        (False); a taken port is retried on another one (``api_url`` changes). Touches
        nothing but this object: it runs in the start thread."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.process.poll() if self.process else None
            if status == _PORT_IN_USE:
                self.launch()
                continue
            if status is not None:
                return False
            try:
                with urllib.request.urlopen(self.api_url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Terminate the process (killed after 5 s), as Prefect stops its own."""
        from infra.stack.processes import stop_child  # at exit only: not on the start path

        process, self.process = self.process, None
        if process is not None:
            stop_child(process, grace_s=5)


def _point_prefect_at(url: str | None) -> None:
    """Make ``url`` Prefect's API URL in this process's global settings (None: unset),
    leaving ``os.environ`` as it was."""
    from prefect.context import refresh_global_settings_context

    before = os.environ.get("PREFECT_API_URL")
    try:
        if url is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = url
        refresh_global_settings_context()  # Prefect's own call for variables set late
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


def _wait(server: _Server) -> None:
    server.healthy = server.wait_healthy()


def start_early() -> None:
    """Begin starting the temporary server (nothing when ``PREFECT_API_URL`` is set)."""
    global _thread, _server
    if os.environ.get("PREFECT_API_URL") or _thread is not None:
        return
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        get_current_settings,
    )

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    from infra.db_templates import ensure_prefect_db

    database = prefect_database()
    if database is not None:
        ensure_prefect_db(database)  # a new workspace's, migrated already: half the start
    server = _Server(get_current_settings().to_environment_variables(exclude_unset=True))
    server.launch()
    atexit.register(server.stop)
    _point_prefect_at(server.api_url)
    _server = server
    _thread = threading.Thread(
        target=_wait, args=(server,), name="prefect-server-start", daemon=True
    )
    _thread.start()


def prefect_database() -> Path | None:
    """The SQLite file of Prefect's server database, or None when it is another database."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    url = url.get_secret_value() if url is not None else ""
    prefix = "sqlite+aiosqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


def wait_until_started() -> None:
    """Block until :func:`start_early`'s start has finished (at once if none began).

    Call it before the first flow: a flow started meanwhile would find the server marked
    running before it answers.
    """
    global _server
    if _thread is None:
        return
    _thread.join()
    # Prefect's settings are changed here, in the caller's thread, never in the start
    # thread (the change briefly sets os.environ, which the caller may be reading).
    server, _server = _server, None
    if server is None:  # settled by an earlier call
        return
    if not server.healthy:
        server.stop()
        _point_prefect_at(None)  # the first flow starts Prefect's own and says why not
    elif server.api_url != _api_url():
        _point_prefect_at(server.api_url)  # launched again on another port


def _api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url
