"""Run a command with a file-size limit, relaying its output to a log file that the limit
does not cover: ``python -m infra.stack.limited --fsize BYTES --log FILE -- COMMAND...``.

The limit is ``RLIMIT_FSIZE`` (no file the command writes may grow past ``BYTES``; a write
that would fails with ``EFBIG``); ``SIGXFSZ`` is ignored so the write fails instead of the
process dying. It stands in for a full artifact disk, which needs no root this way. Output
goes through a pipe, so the command's own log keeps growing past the limit. SIGTERM and
SIGINT are passed on to the command; the exit status is the command's.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys


def _limit(fsize: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack.limited")
    parser.add_argument("--fsize", type=int, required=True, help="largest file size, bytes")
    parser.add_argument("--log", required=True, help="file the command's output is appended to")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.fsize < 1:
        parser.error("give a positive --fsize and a command after --")
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: _limit(args.fsize),
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    if child.stdout is None:  # stdout=PIPE always gives one
        raise RuntimeError("no pipe from the command")
    with open(args.log, "ab", buffering=0) as log:
        for chunk in iter(lambda: os.read(child.stdout.fileno(), 65536), b""):
            log.write(chunk)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
