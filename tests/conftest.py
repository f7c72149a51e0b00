"""Test-wide set-up: every store in a temporary workspace, no TAI_* leaking in.

Prefect reads its home folder once, at import, so it is pointed at a session-wide
temporary folder here, before any test imports it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="tai-tests-"))
for key in [k for k in os.environ if k.startswith("TAI_")]:
    del os.environ[key]
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["MPLCONFIGDIR"] = str(_SESSION_HOME / "matplotlib")
os.environ["GIT_PYTHON_REFRESH"] = "quiet"

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace folder and the settings that point at it."""
    from infra.settings import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAI_WORKSPACE", str(tmp_path / ".tai"))
    monkeypatch.setenv("TAI_POLICY_FILE", str(REPO_ROOT / "tai-policy.yaml"))
    return load_settings()
