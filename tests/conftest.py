"""Test-wide set-up: every store in a temporary workspace, no TAI_* leaking in.

Prefect reads its home folder once, at import, so it is pointed at a session-wide
temporary folder here, before any test imports it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="tai-tests-"))
# Removed when the process ends: registered first, it runs after the exit handlers that
# stop what the tests started (Prefect's temporary server keeps its database here).
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
# TAI_TESTS_NORMAL_EXIT is the harness's own switch (see the end of this file), not a setting.
for key in [k for k in os.environ if k.startswith("TAI_") and k != "TAI_TESTS_NORMAL_EXIT"]:
    del os.environ[key]
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# A fresh Prefect database migrates at first start; on 2 busy cores that can pass 20 s.
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["MPLCONFIGDIR"] = str(_SESSION_HOME / "matplotlib")
os.environ["GIT_PYTHON_REFRESH"] = "quiet"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
# Under xdist (`make test` runs on two processes) each worker and the commands it starts
# get one torch thread: two workers with one thread per core each would spin against
# each other on this machine's two cores. Read by torch at its import, so set here.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent

# Fails a test that trains, runs a flow or talks to an outside system without the marker.
pytest_plugins = ("tests.markers", "pytester")


@contextlib.contextmanager
def process_state_restored():
    """Put back what code under test may change for the whole process: environment
    variables (the CLI's ``setdefault`` of ``MLFLOW_TRACKING_URI``, say), logger levels,
    ``logging.disable`` and warning filters."""
    env = dict(os.environ)
    filters = list(warnings.filters)
    disabled = logging.root.manager.disable
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_level = logging.root.level
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(env)
        warnings.filters[:] = filters
        logging.disable(disabled)
        logging.root.setLevel(root_level)
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture(autouse=True)
def _no_leaked_process_state():
    """No test leaks settings, environment variables or logging state into the next."""
    with process_state_restored():
        yield


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace folder and the settings that point at it."""
    from infra.settings import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAI_WORKSPACE", str(tmp_path / ".tai"))
    monkeypatch.setenv("TAI_POLICY_FILE", str(REPO_ROOT / "tai-policy.yaml"))
    # No requirements unless a test writes some: the tests' lenient policies would fail them.
    monkeypatch.setenv("TAI_REQUIREMENTS_FILE", "")
    return load_settings()


def write_tiny_dataset(
    root: Path,
    dataset: str = "tiny",
    *,
    counts: dict[str, int] | None = None,
    classes: int = 3,
    size: int = 16,
    seed: int = 0,
) -> Path:
    """PNG images ``root/<dataset>/<split>/<label>/<i>.png``: class k has a bright square
    in the k-th corner of a dim noisy background, so a tiny CNN learns it in an epoch."""
    import numpy as np
    from PIL import Image

    counts = counts or {"train": 40, "val": 15, "test": 15}
    rng = np.random.default_rng(seed)
    corners = [(0, 0), (0, size // 2), (size // 2, 0), (size // 2, size // 2)]
    for split, n in counts.items():
        for k in range(classes):
            folder = root / dataset / split / str(k)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = (rng.random((size, size)) * 60).astype(np.uint8)
                r, c = corners[k % 4]
                img[r : r + size // 2, c : c + size // 2] = 230
                Image.fromarray(img, mode="L").save(folder / f"{i}.png")
    return root / dataset


# -- ending the test process ------------------------------------------------------------
# Once, in CI, every test passed and the process then died with a segmentation fault
# while the interpreter tore down native extensions (torch, Oxen's Rust runtime, ...),
# which turned a green run red. Nothing of the tests' results depends on that teardown,
# so after pytest has printed and written everything, the exit handlers run (they stop
# Prefect's temporary server, among others) and the process ends with pytest's own exit
# status, without the interpreter's finalisation.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if not _EXIT_STATUS or os.environ.get("TAI_TESTS_NORMAL_EXIT"):
        return
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[0])
