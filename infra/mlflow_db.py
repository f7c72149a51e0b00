"""A new workspace's MLflow database, copied from a migrated template of this MLflow version.

MLflow creates a SQLite tracking database by running its Alembic migrations, about 2 s:
after the imports, the largest start-up cost of a command in a new workspace (`tai demo`).
The migrated database is the same for every workspace once its Default experiment is
removed (MLflow creates that one again on opening, with this workspace's artifact
location and the time). So `make install` saves such a template in the environment
(``<sys.prefix>/share/tai-mlops/mlflow-<version>.db``, one per MLflow version), and every
new workspace starts from a copy (0.05 s). Without a template (installed another way, or
MLflow upgraded since), MLflow migrates the new database itself, as it always did.

A database that exists is never touched; the copy appears under its name in one step (a
hard link of a finished file), so a process that fails half-way leaves no partial
database, and two processes that race both end with the one that got there first.

``python -m infra.mlflow_db`` makes the template (the Makefile's install step runs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def template_path() -> Path:
    """Where this MLflow version's template lives."""
    from importlib.metadata import version

    return Path(sys.prefix) / "share" / "tai-mlops" / f"mlflow-{version('mlflow')}.db"


def ensure_tracking_db(tracking_uri: str) -> None:
    """Create the SQLite database of ``tracking_uri`` from the template when it does not
    exist yet and there is a template (any other URI, an existing file, or no template:
    nothing happens, and MLflow creates the database itself)."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return
    path = Path(tracking_uri[len(SQLITE_PREFIX) :])
    if path.exists() or not path.parent.is_dir():
        return  # MLflow opens it, or says what is wrong with the folder
    template = template_path()
    if template.exists():
        _place_copy(template, path)


def make_template(target: Path) -> None:
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


def _place_copy(template: Path, path: Path) -> None:
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(template, scratch)
        with contextlib.suppress(FileExistsError):  # another process was first: keep its
            os.link(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


if __name__ == "__main__":
    make_template(template_path())
    print(f"wrote {template_path()}")
