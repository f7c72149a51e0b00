"""The CLI and the pipeline with TAI_DATA_STORE=lakefs, against the spec-checked lakeFS double."""

import pytest
from typer.testing import CliRunner

from flows.cli import app
from infra.mlflow_store import MlflowStore
from tests.conftest import write_tiny_dataset
from tests.infra.lakefs_double import LakeFSDouble, find_spec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_spec() is None, reason="lakeFS spec (shared/) not found"),
]


@pytest.fixture
def lakefs_settings(tiny_settings, monkeypatch):
    with LakeFSDouble(max_lifetime_s=300) as double:
        monkeypatch.setenv("TAI_DATA_STORE", "lakefs")
        monkeypatch.setenv("TAI_LAKEFS_ENDPOINT", double.endpoint)
        monkeypatch.setenv("TAI_LAKEFS_ACCESS_KEY_ID", double.credentials["access_key_id"])
        monkeypatch.setenv("TAI_LAKEFS_SECRET_ACCESS_KEY", double.credentials["secret_access_key"])
        yield double
        assert double.violations == [], "\n".join(double.violations)


def _ok(*args):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.slow
def test_data_commands_and_a_pipeline_run_on_lakefs(lakefs_settings, tiny_settings, tmp_path):
    write_tiny_dataset(tmp_path / "src")
    assert "created lakefs repository data" in _ok("data", "init")
    _ok("data", "commit", str(tmp_path / "src"), "--branch", "main", "-m", "tiny data")
    _ok("data", "branch", "more")
    extra = write_tiny_dataset(tmp_path / "extra", counts={"train": 2}, classes=1, seed=9)
    _ok("data", "commit", str(extra.parent), "--branch", "more", "-m", "two more")
    merged = _ok("data", "merge", "more")
    merge_commit = merged.strip().rsplit(" ", 1)[-1]
    assert "two more" in _ok("data", "log")

    bad = CliRunner().invoke(app, ["run", "--branch", "nope"])
    assert bad.exit_code == 1 and "nope" in bad.stderr and "lakeFS" in bad.stderr

    out = _ok("run", "--branch", "main")
    assert f"data commit      {merge_commit}" in out
    version = MlflowStore(tiny_settings).get_version("1")
    assert version.tags["tai.data.store"] == "lakefs"
    assert version.tags["tai.data.commit"] == merge_commit
