"""Lineage: the code version and the tags every run and model version carries."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from infra.datastore.base import DataVersion
from tai import tags
from tai.gates.policy import GatePolicy

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git sha of the code that runs (``-dirty`` when it has uncommitted changes),
    ``TAI_CODE_VERSION`` when set (container images without .git), else ``unknown``."""
    import os

    if os.environ.get("TAI_CODE_VERSION"):
        return os.environ["TAI_CODE_VERSION"]
    try:
        sha = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def lineage_tags(data: DataVersion, policy: GatePolicy) -> dict[str, str]:
    """Data version, code version and policy hash, as MLflow tags."""
    return {
        **data.as_tags(),
        tags.CODE_VERSION: code_version(),
        tags.POLICY_SHA256: policy.sha256,
        tags.POLICY_SOURCE: policy.source,
    }
