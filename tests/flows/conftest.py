from pathlib import Path

import pytest

from flows.stores import make_data_store
from infra.settings import load_settings
from tests.conftest import write_tiny_dataset

LENIENT = """
version: 1
gates:
  - metric: accuracy
    min: 0.0
  - metric: ece
    max: 1.0
"""
IMPOSSIBLE = """
version: 1
gates:
  - metric: accuracy
    min: 1.01
  - metric: ece
    max: 1.0
"""

# The settings of a one-epoch run on the tiny dataset, without their TAI_ prefix.
TINY_ENV = {
    "DATASET": "tiny",
    "MAX_EPOCHS": "1",
    "BATCH_SIZE": "16",
    "TAI_BUDGET": "16",
    "REQUIREMENTS_FILE": "",
}


@pytest.fixture
def tiny_settings(workspace, tmp_path, monkeypatch):
    """Settings for a one-epoch run on a tiny dataset, with a lenient policy."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(LENIENT)
    for key, value in {**TINY_ENV, "POLICY_FILE": str(policy)}.items():
        monkeypatch.setenv(f"TAI_{key}", value)
    return load_settings()


def commit_dataset(settings, source: Path, message: str = "tiny data", branch: str = "main") -> str:
    store = make_data_store(settings)
    if not store.exists():
        store.create_repository("main")
    store.upload(branch, source)
    return store.commit(branch, message, {"source": "tests"})


@pytest.fixture
def tiny_repo(tiny_settings, tmp_path):
    """An Oxen repository in the workspace whose `main` holds the tiny dataset."""
    write_tiny_dataset(tmp_path / "src")
    return commit_dataset(tiny_settings, tmp_path / "src")


@pytest.fixture
def processes(tmp_path):
    """Subprocesses of an end-to-end test, all stopped at its end (also on failure)."""
    from tests.flows.processes import Processes

    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()
