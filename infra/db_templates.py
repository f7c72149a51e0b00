"""A new workspace's MLflow and Prefect databases, copied from migrated templates.

A new SQLite database is migrated by its owner at first use: MLflow runs its Alembic
migrations (about 2 s), and Prefect's temporary server runs its own and registers its
block types (its start takes 14-16 s instead of 7-8 s, on the same two cores as the
command). The migrated databases are the same for every workspace, so `make install`
saves one of each in the environment (``<sys.prefix>/share/tai-mlops/<package>-<version>.db``,
one per installed version), and a new workspace starts from copies. MLflow's template has
no experiment: MLflow creates its Default experiment on opening, with this workspace's
artifact location and the time. Without a template (installed another way, or the package
upgraded since), MLflow and Prefect migrate the new database themselves, as they always did.

A database that exists is never touched; a copy appears under its name in one step (a hard
link of a finished file), so a process that fails half-way leaves no partial database, and
of two processes that race the first one's copy stays.

``python -m infra.db_templates`` makes both templates (the Makefile's install step runs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def template_path(package: str) -> Path:
    """Where the template of the installed version of ``package`` (mlflow, prefect) lives."""
    return Path(sys.prefix) / "share" / "tai-mlops" / f"{package}-{version(package)}.db"


def ensure_tracking_db(tracking_uri: str) -> None:
    """Create the SQLite database of the MLflow ``tracking_uri`` from the template when it
    does not exist yet (any other URI, an existing file, or no template: nothing happens,
    and MLflow creates the database itself)."""
    if tracking_uri.startswith(SQLITE_PREFIX):
        _copy_if_absent(template_path("mlflow"), Path(tracking_uri[len(SQLITE_PREFIX) :]))


def ensure_prefect_db(database: Path) -> None:
    """The same for the SQLite database of Prefect's temporary server (``prefect.db`` in
    ``PREFECT_HOME`` unless ``PREFECT_API_DATABASE_CONNECTION_URL`` says otherwise)."""
    _copy_if_absent(template_path("prefect"), database)


def _copy_if_absent(template: Path, path: Path) -> None:
    if path.exists() or not path.parent.is_dir() or not template.exists():
        return  # its owner opens it, says what is wrong with the folder, or migrates it
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(template, scratch)
        with contextlib.suppress(FileExistsError):  # another process was first: keep its
            os.link(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def make_mlflow_template(target: Path) -> None:
    """Migrate a new database with MLflow, drop its Default experiment, save it at
    ``target`` (written beside it, then renamed into place)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        db = Path(scratch) / "mlflow.db"
        store = SqlAlchemyStore(f"{SQLITE_PREFIX}{db}", str(Path(scratch) / "mlruns"))
        store.engine.dispose()
        with contextlib.closing(sqlite3.connect(db)) as connection, connection:
            connection.execute("DELETE FROM experiments")
        os.replace(db, target)


_START_AND_STOP = """
from prefect.server.api.server import SubprocessASGIServer
server = SubprocessASGIServer()
server.start()
server.stop()
"""


def make_prefect_template(target: Path) -> None:
    """Start and stop Prefect's temporary server on a new home (it migrates its database
    and registers its block types), fold the write-ahead log into the database, save it
    at ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        env = {
            **os.environ,
            "PREFECT_HOME": scratch,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "ERROR",
        }
        for key in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
            env.pop(key, None)
        subprocess.run([sys.executable, "-c", _START_AND_STOP], env=env, check=True, timeout=300)
        db = Path(scratch) / "prefect.db"
        with contextlib.closing(sqlite3.connect(db)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode=DELETE")
        os.replace(db, target)


if __name__ == "__main__":
    for package, make in (("mlflow", make_mlflow_template), ("prefect", make_prefect_template)):
        make(template_path(package))
        print(f"wrote {template_path(package)}")
