"""Processes the stack starts: each in its own session, its output in a log file, stopped by
its process id and never by name.

A started process is recorded as a :class:`ProcessRecord` (pid, the kernel's start time of
that pid, the command and the log file). The start time guards against a recycled pid: a
record whose pid now belongs to another process is treated as gone. Every process of one
stack (and every descendant, which inherits the environment) carries ``TAI_STACK_ID``;
:func:`stack_processes` finds them by that marker, so a flow-run child that outlived its
worker is stopped too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STACK_ID_VAR = "TAI_STACK_ID"


class StackError(RuntimeError):
    """A service of the stack did not start or stop; the message names it and its log."""


@dataclass(frozen=True)
class ProcessRecord:
    """One started process, as written to the state file."""

    name: str
    pid: int
    start_ticks: int
    args: tuple[str, ...]
    log: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "args": list(self.args)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            args=tuple(data["args"]),
            log=str(data["log"]),
        )

    def alive(self) -> bool:
        """True while this very process (same pid, same start time) runs and is no zombie."""
        stat = _stat(self.pid)
        return stat is not None and stat[2] != "Z" and stat[21] == self.start_ticks


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(name: str, port: int) -> None:
    """Raises StackError (one line) if something listens on 127.0.0.1:``port`` already."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StackError(
                f"port {port} of {name} on 127.0.0.1 is in use by another process "
                f"({exc.strerror}); stop that process, or start a new stack "
                "(`python -m infra.stack up` picks free ports)"
            ) from None


def start_process(
    name: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log_dir: Path,
    cwd: Path | None = None,
    user: str | None = None,
    preexec: Callable[[], None] | None = None,
) -> ProcessRecord:
    """Start ``args`` in a new session (its own process group), output appended to
    ``log_dir/<name>.log``; returns its record.

    Raises:
        StackError: the executable is missing or the process died at once.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%H:%M:%S')} start {' '.join(args)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                list(args),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
                **as_user(user),
            )
        except OSError as exc:
            raise StackError(f"could not start {name} ({args[0]}): {exc}") from exc
    # Popen keeps a handle only to reap the child; the record is what the stack keeps.
    _REAPABLE[proc.pid] = proc
    stat = _stat(proc.pid)
    if stat is None:
        proc.wait(timeout=5)
        raise StackError(f"{name} exited at once with {proc.returncode}; see {log_path}")
    return ProcessRecord(name, proc.pid, stat[21], tuple(args), str(log_path))


# Children started by this process, so that a stopped one is reaped (no zombie lingers).
_REAPABLE: dict[int, subprocess.Popen] = {}


def as_user(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``user`` with that user's group only
    (without ``group``, the child would keep root's group and its permissions)."""
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def stop_process(
    record: ProcessRecord,
    *,
    stack_id: str | None = None,
    grace_s: float = 20.0,
    sig: int = signal.SIGTERM,
) -> None:
    """Stop a recorded process and what is left of its process group: ``sig`` first, SIGKILL
    after ``grace_s`` seconds. A record whose process is gone (or whose pid was reused) is
    only swept for group members; with ``stack_id`` only members carrying that marker."""
    members = [
        pid
        for pid in group_members(record.pid)
        if pid != record.pid and (stack_id is None or has_marker(pid, stack_id))
    ]
    if record.alive():
        _signal(record.pid, sig)
    for pid in members:
        _signal(pid, sig)
    deadline = time.monotonic() + grace_s
    targets = [record.pid, *members]
    while time.monotonic() < deadline:
        _reap()
        if not any(_running(pid) for pid in targets if pid != record.pid or record.alive()):
            break
        time.sleep(0.1)
    for pid in targets:
        if (pid != record.pid or record.alive()) and _running(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        _running(pid) for pid in targets if pid != record.pid or record.alive()
    ):
        _reap()
        time.sleep(0.05)
    _reap()


def stop_child(process: subprocess.Popen, grace_s: float) -> int:
    """Stop a child this process started: SIGTERM, SIGKILL after ``grace_s`` seconds; its
    exit status (at once when it has already exited)."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def kill_now(pid: int) -> None:
    """SIGKILL one process by pid (a fault test's crash)."""
    _signal(pid, signal.SIGKILL)
    _reap()


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[4] == pgid and stat[2] != "Z":
                found.append(int(entry.name))
    return found


def stack_processes(stack_id: str) -> list[int]:
    """Pids of every live process whose environment carries ``TAI_STACK_ID=<stack_id>``."""
    marker = f"{STACK_ID_VAR}={stack_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            stat = _stat(int(entry.name))
            if stat is not None and stat[2] != "Z":
                found.append(int(entry.name))
    return found


def has_marker(pid: int, stack_id: str) -> bool:
    """True if process ``pid`` carries ``TAI_STACK_ID=<stack_id>`` in its environment."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{STACK_ID_VAR}={stack_id}".encode() in environ.split(b"\0")


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[2] != "Z":
                parents.setdefault(stat[3], []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def wait_until(
    what: str,
    check: Callable[[], object],
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    alive: Callable[[], None] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy (exceptions count as not yet);
    ``alive`` may raise to give up early.

    Raises:
        StackError: ``timeout_s`` passed.
    """
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            result = check()
        except Exception as exc:  # the service is not up yet
            last, result = exc, None
        if result:
            return result
        time.sleep(interval_s)
    raise StackError(
        f"timed out after {timeout_s:.0f} s waiting for {what}"
        + (f" (last error: {type(last).__name__}: {last})" if last else "")
    )


def tail(path: str | Path, chars: int = 4000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _stat(pid: int) -> list[Any] | None:
    """Fields of /proc/<pid>/stat (0-based as in proc(5) minus one), ints where numeric."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, rest = raw.rpartition(")")
    fields = [head.split(" (", 1)[0], head.split(" (", 1)[-1], *rest.split()]
    out: list[Any] = []
    for i, value in enumerate(fields):
        out.append(int(value) if i not in (1, 2) and value.lstrip("-").isdigit() else value)
    return out


def _running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] != "Z"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap() -> None:
    for pid, proc in list(_REAPABLE.items()):
        if proc.poll() is not None:
            del _REAPABLE[pid]
