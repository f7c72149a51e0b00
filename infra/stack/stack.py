"""The production stack on one machine: PostgreSQL, an MLflow tracking server and a Prefect
server on it, a process work pool with a worker running the deployments of
``prefect.yaml``, and ``tai webhook``.

Everything listens on 127.0.0.1, on ports free at start. The stack's folder (a new
temporary folder by default) holds the Postgres data, MLflow's artifact folder, Prefect's
home, the workspace of the worker (``TAI_WORKSPACE``: the embedded Oxen data repository and
the caches), one log file per service, and ``state.json``: URLs, ports, pids and the
environment a client needs (mode 0600: it holds the database password and the webhook
secret). The state file is the only memory: any process can load it, stop or restart one
service, and the new pid is written back.

Example:
    >>> stack = Stack.create(settings_env={"TAI_MAX_EPOCHS": "1"})  # doctest: +SKIP
    >>> stack.up()  # doctest: +SKIP
    >>> subprocess.run(["tai", "models"], env=stack.client_env())  # doctest: +SKIP
    >>> stack.down()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from infra.stack import postgres
from infra.stack.processes import (
    STACK_ID_VAR,
    ProcessRecord,
    StackError,
    check_port_free,
    free_port,
    kill_now,
    stack_processes,
    start_process,
    stop_process,
    tail,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
WORK_POOL = "tai-pool"
SERVICES = ("postgres", "mlflow", "prefect", "worker", "webhook")
# The port each listening service takes (the worker listens on none).
PORT_OF = {"postgres": "postgres", "mlflow": "mlflow", "prefect": "prefect", "webhook": "webhook"}
# Where `python -m infra.stack up` leaves the path of the last state file it wrote.
LATEST = Path(tempfile.gettempdir()) / "tai-stack.latest"
STATE_FILE = "state.json"
ZOMBIE_AUTOMATION = "zombie_flow_runs.json"


class Stack:
    """One stack, described by its state file.

    Args:
        state: what :meth:`create` wrote (see the module docstring); use :meth:`create`
            or :meth:`load` rather than this constructor.
    """

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    # -- creation and persistence --------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: Path | None = None,
        *,
        settings_env: Mapping[str, str] | None = None,
        worker_limit: int = 2,
        scheduler: bool = False,
    ) -> Stack:
        """A new stack's folder and state file; nothing is started.

        Args:
            root: the stack's folder; a new temporary folder if None.
            settings_env: ``TAI_*`` (and other) variables of the worker and the webhook,
                e.g. ``{"TAI_MAX_EPOCHS": "1"}``; the caller's ``TAI_*`` variables are not
                inherited.
            worker_limit: how many flow runs the worker runs at once.
            scheduler: run Prefect's scheduler service (the nightly deployment's runs).
        """
        root = Path(root) if root else Path(tempfile.mkdtemp(prefix="tai-stack-"))
        root = root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        if worker_limit < 1:
            raise ValueError(f"worker_limit must be at least 1; got {worker_limit}")
        ports = {name: free_port() for name in ("postgres", "mlflow", "prefect", "webhook")}
        settings = dict(settings_env or {})
        settings.setdefault("TAI_DATA_STORE", "oxen")
        settings.setdefault("TAI_DATA_REPOSITORY", "data")
        settings.setdefault("TAI_DATA_BRANCH", "main")
        state = {
            "stack_id": uuid.uuid4().hex,
            "root": str(root),
            "repo_root": str(REPO_ROOT),
            "python": sys.executable,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ports": ports,
            "urls": {
                "postgres": f"postgresql://127.0.0.1:{ports['postgres']}",
                "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
                "prefect_api": f"http://127.0.0.1:{ports['prefect']}/api",
                "webhook": f"http://127.0.0.1:{ports['webhook']}",
            },
            "postgres_password": "",
            "webhook_secret": secrets.token_urlsafe(24),
            "settings_env": settings,
            "worker_limit": worker_limit,
            "scheduler": scheduler,
            "processes": {},
            "deployments": [],
        }
        stack = cls(state)
        stack.save()
        return stack

    @classmethod
    def load(cls, path: Path | str | None = None) -> Stack:
        """The stack of a state file: ``path``, ``$TAISTACK_STATE`` or the last one started.

        Raises:
            StackError: no state file is found.
        """
        candidate = path or os.environ.get("TAISTACK_STATE")
        if not candidate and LATEST.is_file():
            candidate = LATEST.read_text().strip()
        if not candidate or not Path(candidate).is_file():
            raise StackError(
                f"no stack state file ({candidate or 'none given'}); start one with "
                "`python -m infra.stack up`, or pass --state / set TAISTACK_STATE"
            )
        return cls(json.loads(Path(candidate).read_text()))

    @property
    def root(self) -> Path:
        return Path(self.state["root"])

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def urls(self) -> dict[str, str]:
        return dict(self.state["urls"])

    @property
    def webhook_secret(self) -> str:
        return str(self.state["webhook_secret"])

    def save(self) -> None:
        """Write the state file (0600), atomically."""
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.state, f, indent=2, sort_keys=True)
        os.replace(tmp, self.state_path)

    def reload(self) -> None:
        """Re-read the state file (another process may have restarted a service)."""
        self.state = json.loads(self.state_path.read_text())

    def record(self, name: str) -> ProcessRecord | None:
        data = self.state["processes"].get(name)
        return ProcessRecord.from_dict(data) if data else None

    # -- environments --------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        """The caller's environment without ``TAI_*``, ``PREFECT_*`` and ``MLFLOW_*``,
        plus the stack's marker."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TAI_", "PREFECT_", "MLFLOW_")) and k != "PYTHONFAULTHANDLER"
        }
        env[STACK_ID_VAR] = self.state["stack_id"]
        # The stack runs the code of the checkout it was started from, also where the
        # virtual environment's editable install points at another checkout.
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [self.state["repo_root"], os.environ.get("PYTHONPATH", "")])
        )
        env["DO_NOT_TRACK"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env["GIT_PYTHON_REFRESH"] = "quiet"
        env["MPLCONFIGDIR"] = str(self.root / "matplotlib")
        return env

    def client_env(self) -> dict[str, str]:
        """What a `tai` command, a script or a test needs to talk to this stack: Prefect's
        API, the MLflow server, the workspace (the Oxen repository) and the settings."""
        return {
            **self.base_env(),
            "PREFECT_API_URL": self.urls["prefect_api"],
            "PREFECT_HOME": str(self.root / "prefect-client"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "TAI_WORKSPACE": str(self.workspace),
            "TAI_MLFLOW_TRACKING_URI": self.urls["mlflow"],
            "MLFLOW_TRACKING_URI": self.urls["mlflow"],
            # Artifacts go through the tracking server (--serve-artifacts), never to a
            # local folder of whoever creates the experiment first.
            "TAI_MLFLOW_ARTIFACT_ROOT": "mlflow-artifacts:/tai",
            **self.state["settings_env"],
        }

    # -- the whole stack -----------------------------------------------------------------
    def up(self) -> None:
        """Start every service in order and wait until each answers; on any failure stop
        what was started and raise.

        Raises:
            StackError: a service did not start (the message ends with its log's tail).
        """
        try:
            self._init_postgres()
            self.start_service("postgres")
            postgres.create_databases(self._pg())
            self.start_service("mlflow")
            self.start_service("prefect")
            self._create_work_pool()
            self._deploy()
            self._create_automations()
            self.start_service("worker")
            self.start_service("webhook")
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop every service (reverse order), then any process still carrying this stack's
        marker (a flow run whose worker died, a command a test started)."""
        self.reload_if_exists()
        for name in reversed(SERVICES):
            self.stop_service(name)
        leftovers = stack_processes(self.state["stack_id"])
        for pid in leftovers:
            kill_now(pid)
        if _points_to(LATEST, self.state_path):
            LATEST.unlink(missing_ok=True)

    def reload_if_exists(self) -> None:
        if self.state_path.is_file():
            self.reload()

    def status(self) -> dict[str, dict[str, Any]]:
        """Each service: pid, whether that process is alive, and whether it answers."""
        self.reload_if_exists()
        checks = {
            "postgres": self._postgres_ready,
            "mlflow": self._mlflow_ready,
            "prefect": self._prefect_ready,
            "worker": self._worker_ready,
            "webhook": self._webhook_ready,
        }
        out = {}
        for name in SERVICES:
            rec = self.record(name)
            try:
                answers = bool(checks[name]())
            except Exception:
                answers = False
            out[name] = {
                "pid": rec.pid if rec else None,
                "alive": bool(rec and rec.alive()),
                "answers": answers,
                "log": rec.log if rec else None,
            }
        return out

    # -- one service ---------------------------------------------------------------------
    def start_service(self, name: str, *, fsize_limit: int | None = None) -> ProcessRecord:
        """Start one service and wait until it answers; record its pid.

        Args:
            name: one of ``postgres``, ``mlflow``, ``prefect``, ``worker``, ``webhook``.
            fsize_limit: (``mlflow`` only) the largest file, in bytes, the server may write:
                a stand-in for a full artifact disk (see :mod:`infra.stack.limited`).

        Raises:
            StackError: it did not come up in time.
            ValueError: an unknown service, or a limit for another service.
        """
        if name not in SERVICES:
            raise ValueError(f"service must be one of {', '.join(SERVICES)}; got {name!r}")
        if fsize_limit is not None and name != "mlflow":
            raise ValueError("fsize_limit applies to the mlflow service only")
        self.reload_if_exists()
        current = self.record(name)
        if current is not None and current.alive():
            raise StackError(f"{name} already runs (pid {current.pid}); stop it first")
        if name in PORT_OF:
            check_port_free(name, self.state["ports"][PORT_OF[name]])
        if name in ("mlflow", "prefect"):
            postgres.check_login(self._pg(), database=name)
        if name == "worker":
            self.check_work_pool(WORK_POOL)
        if name == "postgres":
            rec = postgres.start(self._pg(), self.log_dir, self.base_env())
        else:
            args, env, ready, timeout = self._spec(name, fsize_limit, since=time.time())
            rec = start_process(name, args, env=env, log_dir=self.log_dir, cwd=REPO_ROOT)

            def alive(rec: ProcessRecord = rec) -> None:
                if not rec.alive():
                    raise StackError(f"{name} exited while starting:\n{tail(rec.log)}")

            try:
                wait_until(f"{name} to answer", ready, timeout_s=timeout, alive=alive)
            except StackError as exc:
                stop_process(rec, stack_id=self.state["stack_id"])
                raise StackError(f"{exc}\n--- {rec.log} ---\n{tail(rec.log)}") from None
        self.state["processes"][name] = rec.as_dict()
        self.save()
        return rec

    def stop_service(self, name: str, *, kill: bool = False) -> None:
        """Stop one service by its recorded pid (SIGTERM, or SIGKILL at once with ``kill``)."""
        self.reload_if_exists()
        rec = self.record(name)
        if rec is None:
            return
        if kill:
            stop_process(rec, stack_id=self.state["stack_id"], grace_s=0, sig=9)
        elif name == "postgres":
            postgres.stop(rec)
        else:
            stop_process(rec, stack_id=self.state["stack_id"])
        self.state["processes"].pop(name, None)
        self.save()

    def restart_service(self, name: str, **options: Any) -> ProcessRecord:
        self.stop_service(name)
        return self.start_service(name, **options)

    # -- what each service runs ----------------------------------------------------------
    def _spec(self, name: str, fsize_limit: int | None, since: float):
        py = self.state["python"]
        ports = self.state["ports"]
        if name == "mlflow":
            args = [
                py,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                self._pg().url("mlflow", "postgresql+psycopg2"),
                "--artifacts-destination",
                str(self.artifacts_dir),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["mlflow"]),
                "--workers",
                "2",
            ]
            if fsize_limit is not None:
                log = str(self.log_dir / "mlflow.log")
                args = [
                    py,
                    "-m",
                    "infra.stack.limited",
                    "--fsize",
                    str(fsize_limit),
                    "--log",
                    log,
                    "--",
                    *args,
                ]
            env = {**self.base_env(), "MLFLOW_HOME": str(self.root / "mlflow-home")}
            return args, env, self._mlflow_ready, 180
        if name == "prefect":
            env = {
                **self.base_env(),
                "PREFECT_HOME": str(self.root / "prefect-server"),
                "PREFECT_API_DATABASE_CONNECTION_URL": self._pg().url(
                    "prefect", "postgresql+asyncpg"
                ),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": str(
                    bool(self.state["scheduler"])
                ).lower(),
                "PREFECT_LOGGING_LEVEL": "INFO",
            }
            args = [
                py,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["prefect"]),
            ]
            return args, env, self._prefect_ready, 300
        if name == "worker":
            env = {
                **self.client_env(),
                "PREFECT_LOGGING_LEVEL": "INFO",
                "PREFECT_WORKER_QUERY_SECONDS": "2",
                "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                # Flow runs send heartbeats this often; the zombie automation waits 90 s.
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
            }
            args = [
                py,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                WORK_POOL,
                "--type",
                "process",
                "--name",
                f"tai-worker-{self.state['stack_id'][:8]}",
                "--limit",
                str(self.state["worker_limit"]),
            ]
            return args, env, lambda: self._worker_ready(since), 180
        if name == "webhook":
            env = {**self.client_env(), "TAI_WEBHOOK_SECRET": self.webhook_secret}
            args = [
                _tai_executable(),
                "webhook",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["webhook"]),
            ]
            return args, env, self._webhook_ready, 120
        raise ValueError(name)

    def _pg(self) -> postgres.Postgres:
        return postgres.Postgres(
            self.root / "postgres",
            self.state["ports"]["postgres"],
            self.state["postgres_password"],
        )

    def _init_postgres(self) -> None:
        if not self.state["postgres_password"]:
            pg = postgres.init(
                self.root / "postgres", self.state["ports"]["postgres"], self.log_dir
            )
            self.state["postgres_password"] = pg.password
            self.save()

    def _create_work_pool(self) -> None:
        self._prefect_cli(["work-pool", "create", WORK_POOL, "--type", "process"], "work-pool")

    def _deploy(self) -> None:
        """``prefect deploy --all`` of the repository's prefect.yaml, its triggers matched to
        this stack's data store (as ``tai serve`` does with ``TAI_DATA_STORE``)."""
        settings = self.state["settings_env"]
        adapted = adapt_prefect_yaml(
            (REPO_ROOT / "prefect.yaml").read_text(),
            store=settings["TAI_DATA_STORE"],
            repository=settings["TAI_DATA_REPOSITORY"],
            branch=settings["TAI_DATA_BRANCH"],
        )
        path = self.root / "prefect.yaml"
        path.write_text(adapted)
        self._prefect_cli(
            ["--no-prompt", "deploy", "--all", "--prefect-file", str(path)], "deploy", timeout=600
        )
        client = httpx.Client(base_url=self.urls["prefect_api"], timeout=30)
        found = client.post("/deployments/filter", json={}).json()
        self.state["deployments"] = sorted(
            f"{d['name']}" for d in found if d.get("work_pool_name") == WORK_POOL
        )
        self.save()

    def _create_automations(self) -> None:
        """Prefect's detection of flow runs that died with their worker (no heartbeat for
        90 s: CRASHED); without it such a run stays RUNNING for ever. See the file."""
        automation = json.loads((Path(__file__).with_name(ZOMBIE_AUTOMATION)).read_text())
        response = httpx.post(
            f"{self.urls['prefect_api']}/automations/", json=automation, timeout=30
        )
        if response.status_code >= 300:
            raise StackError(
                f"could not create the automation {automation['name']}: "
                f"{response.status_code} {response.text[:500]}"
            )

    def _prefect_cli(self, args: list[str], what: str, timeout: int = 300) -> None:
        env = {**self.client_env(), "PREFECT_LOGGING_LEVEL": "WARNING"}
        log = self.log_dir / f"{what}.log"
        with open(log, "ab") as out:
            done = subprocess.run(
                [self.state["python"], "-m", "prefect", *args],
                env=env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if done.returncode != 0:
            raise StackError(f"`prefect {' '.join(args)}` failed ({done.returncode}):\n{tail(log)}")

    def check_work_pool(self, pool: str) -> None:
        """Raises StackError (one line) if the Prefect server has no work pool ``pool``."""
        url = f"{self.urls['prefect_api']}/work_pools/{pool}"
        try:
            response = httpx.get(url, timeout=10)
        except httpx.HTTPError as exc:
            raise StackError(
                f"the Prefect server at {self.urls['prefect_api']} does not answer "
                f"({type(exc).__name__}); start it (`python -m infra.stack up`)"
            ) from None
        if response.status_code == 404:
            raise StackError(
                f"work pool {pool!r} does not exist on the Prefect server at "
                f"{self.urls['prefect_api']}; create it (`prefect work-pool create {pool} "
                "--type process`) and deploy (`prefect deploy --all`)"
            )
        response.raise_for_status()

    # -- readiness -----------------------------------------------------------------------
    def _postgres_ready(self) -> bool:
        return postgres._ready(self._pg())

    def _mlflow_ready(self) -> bool:
        return httpx.get(f"{self.urls['mlflow']}/health", timeout=5).status_code == 200

    def _prefect_ready(self) -> bool:
        return httpx.get(f"{self.urls['prefect_api']}/health", timeout=5).status_code == 200

    def _worker_ready(self, since: float | None = None) -> bool:
        """The worker is ONLINE in its pool (with a heartbeat after ``since``, so that a
        restarted worker is not taken for the one it replaces)."""
        from datetime import datetime

        response = httpx.post(
            f"{self.urls['prefect_api']}/work_pools/{WORK_POOL}/workers/filter",
            json={},
            timeout=5,
        )
        name = f"tai-worker-{self.state['stack_id'][:8]}"
        for worker in response.json() if response.status_code == 200 else []:
            beat = worker.get("last_heartbeat_time")
            fresh = since is None or (
                beat is not None and datetime.fromisoformat(beat).timestamp() >= since
            )
            if worker["name"] == name and worker.get("status") == "ONLINE" and fresh:
                return True
        return False

    def _webhook_ready(self) -> bool:
        return httpx.get(f"{self.urls['webhook']}/health", timeout=5).status_code == 200


def adapt_prefect_yaml(text: str, *, store: str, repository: str, branch: str) -> str:
    """``prefect.yaml`` with each ``tai.data.merged`` trigger matching ``store``'s resource id
    (``tai.data.<store>.<repository>.<branch>``); everything else as written.

    Raises:
        StackError: the file has no such trigger (the adaptation would silently do nothing).
    """
    config = yaml.safe_load(text)
    changed = 0
    for deployment in config.get("deployments", []):
        for trigger in deployment.get("triggers", []) or []:
            if "tai.data.merged" in (trigger.get("expect") or []):
                trigger["match"] = {
                    "prefect.resource.id": f"tai.data.{store}.{repository}.{branch}"
                }
                trigger["name"] = f"tai-retrain-on-merge-{store}-{repository}-{branch}"
                changed += 1
    if not changed:
        raise StackError("prefect.yaml has no trigger on tai.data.merged to adapt")
    return yaml.safe_dump(config, sort_keys=False)


def _tai_executable() -> str:
    beside = Path(sys.executable).parent / "tai"
    if beside.is_file():
        return str(beside)
    found = shutil.which("tai")
    if not found:
        raise StackError("the `tai` command is not installed; run `make install`")
    return found


def _points_to(pointer: Path, state: Path) -> bool:
    try:
        return Path(pointer.read_text().strip()) == state
    except OSError:
        return False
