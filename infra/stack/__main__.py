"""``python -m infra.stack up|down|status|run``: start, stop and inspect the stack.

- ``up [--dir DIR] [--env-file FILE] [--env K=V ...]``: start it; prints the state file's
  path (also left in ``$TMPDIR/tai-stack.latest``) and the URLs.
- ``status [--state FILE]``: each service's pid, whether it lives and answers (exit 1 if
  one does not).
- ``down [--state FILE]``: stop everything it started, by pid.
- ``env [--state FILE]``: ``export`` lines for a shell that talks to the stack.
- ``run [--env-file FILE] ... -- COMMAND``: up, run COMMAND with ``TAISTACK_STATE`` and the
  client environment, down (also when COMMAND fails or this process gets SIGTERM/SIGINT);
  the exit status is COMMAND's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra.stack.processes import StackError, stop_child
from infra.stack.stack import LATEST, Stack


def read_env_file(path: str | None, pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` lines of a file (``#`` comments, blank lines) and ``--env`` pairs;
    ``{repo}`` in a value is the repository root."""
    from infra.stack.stack import REPO_ROOT

    lines = Path(path).read_text().splitlines() if path else []
    out: dict[str, str] = {}
    for line in [*lines, *pairs]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"not KEY=VALUE: {line!r}")
        out[key.strip()] = value.strip().replace("{repo}", str(REPO_ROOT))
    return out


def _up(args: argparse.Namespace) -> Stack:
    stack = Stack.create(
        Path(args.dir) if args.dir else None,
        settings_env=read_env_file(args.env_file, args.env),
        worker_limit=args.worker_limit,
        scheduler=args.scheduler,
    )
    started = time.monotonic()
    print(f"starting the stack in {stack.root} ...", file=sys.stderr, flush=True)
    stack.up()
    LATEST.write_text(str(stack.state_path))
    print(
        f"stack up in {time.monotonic() - started:.0f} s; state: {stack.state_path}",
        file=sys.stderr,
    )
    for name, url in stack.urls.items():
        print(f"  {name:12} {url}", file=sys.stderr)
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "run"):
        p = sub.add_parser(name)
        p.add_argument("--dir", help="the stack's folder (default: a new temporary folder)")
        p.add_argument("--env-file", help="KEY=VALUE lines for the worker and webhook")
        p.add_argument("--env", action="append", default=[], help="KEY=VALUE (repeatable)")
        p.add_argument("--worker-limit", type=int, default=2, help="flow runs at once")
        p.add_argument(
            "--scheduler",
            action="store_true",
            help="run Prefect's scheduler (the nightly deployment)",
        )
        if name == "run":
            p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    for name in ("down", "status", "env"):
        p = sub.add_parser(name)
        p.add_argument("--state", help="the state file (default: $TAISTACK_STATE or the last)")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            stack = _up(args)
            print(stack.state_path)
            return 0
        if args.command in ("down", "status", "env"):
            stack = Stack.load(args.state)
            if args.command == "down":
                stack.down()
                print(f"stack {stack.root} stopped", file=sys.stderr)
                return 0
            if args.command == "env":
                for key, value in sorted(stack.client_env().items()):
                    if key.startswith(("TAI_", "PREFECT_", "MLFLOW_")):
                        print(f"export {key}={shlex.quote(value)}")
                print(f"export TAISTACK_STATE={shlex.quote(str(stack.state_path))}")
                return 0
            status = stack.status()
            print(
                json.dumps(
                    {"state": str(stack.state_path), "urls": stack.urls, "services": status},
                    indent=2,
                )
            )
            return 0 if all(s["alive"] and s["answers"] for s in status.values()) else 1
        return _run(args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise SystemExit("give the command to run after --")
    stack: Stack | None = None

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    try:
        stack = _up(args)
        env = {**stack.client_env(), "TAISTACK_STATE": str(stack.state_path)}
        child = subprocess.Popen(cmd, env=env)
        try:
            return child.wait()
        except KeyboardInterrupt:
            stop_child(child, grace_s=30)
            return 130
    except KeyboardInterrupt:
        return 130
    finally:
        if stack is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stack.down()
            print(
                f"stack stopped; {time.monotonic() - started:.0f} s in all; logs in "
                f"{stack.log_dir}",
                file=sys.stderr,
            )


if __name__ == "__main__":
    sys.exit(main())
