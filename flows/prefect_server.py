"""Start Prefect's temporary server in the background while other start-up work runs.

Without ``PREFECT_API_URL`` the first flow run starts a temporary Prefect server and waits
for it: 5-14 s in `tai demo` (py-spy, 2026-12-04), most of it in the server's own process
(imports, database migrations). :func:`start_early` begins that start in a thread at the
top of a command, so it overlaps with checking the inputs or importing the sample;
:func:`wait_until_started` joins it before the first flow. If the early start fails the
first flow starts the server itself and reports what is wrong, as before. A new
workspace's database is first copied from the migrated template made at install
(:mod:`infra.db_templates`), which halves the server's start.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_thread: threading.Thread | None = None


def _start(server: object) -> None:
    try:
        server.start()  # type: ignore[attr-defined]  # the instance the first flow asks for
    except Exception:  # noqa: BLE001 - the first flow run starts it again and says why not
        return


def start_early() -> None:
    """Begin starting the temporary server (nothing when ``PREFECT_API_URL`` is set).

    Prefect's server modules are imported here, in the calling thread: imported in the
    thread while the caller imported MLflow, SQLAlchemy's modules were seen half
    initialised (``sqlalchemy.orm.exc`` without ``UnmappedClassError``) and every later
    use failed. The thread only starts the server's process and polls it.
    """
    global _thread
    if os.environ.get("PREFECT_API_URL") or _thread is not None:
        return
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    from infra.db_templates import ensure_prefect_db

    database = prefect_database()
    if database is not None:
        ensure_prefect_db(database)  # a new workspace's, migrated already: half the start
    server = SubprocessASGIServer()
    _thread = threading.Thread(
        target=_start, args=(server,), name="prefect-server-start", daemon=True
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
    if _thread is not None:
        _thread.join()
