import shutil
from pathlib import Path

import pytest

from flows.stores import make_data_store
from infra.settings import load_settings
from tests.conftest import process_state_restored, write_tiny_dataset

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


def train_champion(root: Path, policy: str, counts: dict[str, int] | None = None):
    """Train a champion once, for a module's tests to copy (:func:`copy_workspace`).

    The tiny dataset is committed to a new workspace in ``root`` and the pipeline runs
    once on ``main`` with ``policy``; the environment is restored afterwards. The
    workspace's ``mlartifacts`` is moved aside for the copies. Returns the workspace, the
    dataset's folder (``root/src/tiny``) and the run's result.
    """
    from flows.pipeline import tai_pipeline

    source = write_tiny_dataset(root / "src", counts=counts)
    (root / "policy.yaml").write_text(policy)
    env = {**TINY_ENV, "WORKSPACE": str(root / ".tai"), "POLICY_FILE": str(root / "policy.yaml")}
    with process_state_restored(), pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for key, value in env.items():
            patch.setenv(f"TAI_{key}", value)
        settings = load_settings()
        commit_dataset(settings, root / "src")
        result = tai_pipeline(branch="main", settings=settings)
    trained = settings.workspace_dir
    (trained / "mlartifacts").rename(trained / "mlartifacts.trained")
    return trained, source, result


def copy_workspace(trained: Path, copy: Path) -> None:
    """Copy a workspace of :func:`train_champion` to ``copy``, for one test to change.

    The registry holds absolute artifact paths into the workspace the champion was trained
    in, so that workspace's ``mlartifacts`` becomes a link to the copy's: the model and its
    artifacts are read from, and changed in, this test's copy. Everything else (the
    registry's database, the Oxen repository, Prefect's home) is at a new path, so no
    handle an earlier test cached sees it. Tests that use it must not run in parallel.
    """
    shutil.copytree(
        trained, copy, ignore=shutil.ignore_patterns("mlartifacts*"), dirs_exist_ok=True
    )
    shutil.copytree(trained / "mlartifacts.trained", copy / "mlartifacts")
    (trained / "mlartifacts").unlink(missing_ok=True)
    (trained / "mlartifacts").symlink_to(copy / "mlartifacts")
