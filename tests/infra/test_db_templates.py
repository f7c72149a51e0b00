"""A new workspace's MLflow database from the migrated template: the same schema and
behaviour as one MLflow creates itself, existing databases untouched, nothing partial.
(Prefect's: tests/flows/test_prefect_server.py.)"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from infra import db_templates

pytestmark = pytest.mark.integration  # MLflow opens the databases


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "mlflow-test.db"
    db_templates.make_mlflow_template(path)
    return path


@pytest.fixture
def with_template(template, monkeypatch) -> Path:
    monkeypatch.setattr(db_templates, "template_path", lambda package: template)
    return template


def _schema(db: Path) -> dict[str, list[tuple]]:
    """Each table's columns (name, type, not null, default, key) and each index's columns.
    (Not the SQL text: MLflow's CHECK lists come out in a varying order.)"""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        names = connection.execute("SELECT type, name FROM sqlite_master ORDER BY name")
        return {
            name: connection.execute(
                f'PRAGMA {"table_info" if kind == "table" else "index_info"}("{name}")'
            ).fetchall()
            for kind, name in names.fetchall()
            if kind in ("table", "index")
        }


def _rows(db: Path, query: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(query).fetchall()


def test_a_copied_database_works_as_one_mlflow_made(with_template, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    fresh, copied = tmp_path / "fresh.db", tmp_path / "copied.db"
    db_templates.ensure_tracking_db(f"sqlite:///{copied}")
    assert copied.exists() and not fresh.exists()
    for db in (fresh, copied):  # MLflow migrates `fresh` itself
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        experiment = client.create_experiment("tai", artifact_location=str(tmp_path / "art"))
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "accuracy", 0.9)
        client.create_registered_model("m")
        client.create_model_version("m", "runs:/x/model", run.info.run_id)
        client.set_registered_model_alias("m", "champion", "1")
        assert experiment == "1"
        assert str(client.get_model_version_by_alias("m", "champion").version) == "1"
    assert _schema(copied) == _schema(fresh)
    assert _rows(copied, "SELECT * FROM alembic_version") == _rows(
        fresh, "SELECT * FROM alembic_version"
    )
    # the Default experiment is this workspace's, made when the copy was first opened
    query = "SELECT experiment_id, name, artifact_location FROM experiments ORDER BY 1"
    assert _rows(copied, query)[0] == (0, "Default", str(tmp_path / "mlruns" / "0"))
    assert [r[:2] for r in _rows(copied, query)] == [r[:2] for r in _rows(fresh, query)]


def test_an_existing_database_other_uris_and_no_template_are_left_alone(
    with_template, tmp_path, monkeypatch
):
    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"not touched")
    db_templates.ensure_tracking_db(f"sqlite:///{existing}")
    assert existing.read_bytes() == b"not touched"

    db_templates.ensure_tracking_db("http://127.0.0.1:5000")
    db_templates.ensure_tracking_db(f"sqlite:///{tmp_path / 'no-such-folder' / 'mlflow.db'}")
    assert not (tmp_path / "no-such-folder").exists()

    monkeypatch.setattr(db_templates, "template_path", lambda package: tmp_path / "absent.db")
    db_templates.ensure_tracking_db(f"sqlite:///{tmp_path / 'new.db'}")
    assert not (tmp_path / "new.db").exists()  # MLflow will create it itself
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_a_copy_that_fails_half_way_leaves_nothing(with_template, tmp_path, monkeypatch):
    def broken(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:1000])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(db_templates.shutil, "copyfile", broken)
    with pytest.raises(OSError, match="No space left"):
        db_templates.ensure_tracking_db(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert list(tmp_path.iterdir()) == []


def test_the_template_has_no_experiment_and_is_keyed_by_the_mlflow_version(template):
    from importlib.metadata import version

    assert _rows(template, "SELECT * FROM experiments") == []
    assert db_templates.template_path("mlflow").name == f"mlflow-{version('mlflow')}.db"
