"""stop_child: SIGTERM, then SIGKILL after the grace period, for a child of this process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from infra.stack.processes import stop_child

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def test_a_child_that_honours_sigterm_stops_at_once():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = time.monotonic()
    assert stop_child(child, grace_s=30) == -signal.SIGTERM
    assert time.monotonic() - start < 10


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period():
    child = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"  # its handler is in place
    start = time.monotonic()
    assert stop_child(child, grace_s=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - start < 10
    child.stdout.close()


def test_a_child_that_has_exited_gives_its_status():
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    child.wait()
    assert stop_child(child, grace_s=1) == 3
