"""`tai monitor` end to end on the embedded stack: a folder and a data-store ref, the JSON,
the MLflow run, the report, the alarm once per episode, the review branch, and every bad
input refused in one line with nothing written."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from flows.monitor import EXPERIMENT
from infra.mlflow_store import MlflowStore
from tai import tags
from tests.flows.conftest import copy_workspace, train_champion

pytestmark = [pytest.mark.slow, pytest.mark.integration]

POLICY = """
version: 1
gates:
  - metric: accuracy
    min: 0.0
monitoring:
  - metric: estimated_accuracy
    min: 0.9
    use: upper
  - metric: deferral_p_value
    min: 0.001
  - metric: drift_p_value
    min: 0.001
"""
KEYS = [
    "model_version",
    "n_images",
    "estimated_accuracy",
    "estimated_accuracy_lower",
    "estimated_accuracy_upper",
    "average_confidence",
    "deferral_rate",
    "expected_deferral_rate",
    "drift_p_value",
    "alarm",
    "reasons",
    "report",
]


def tai(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def _champion(tmp_path_factory):
    """One champion for the module, trained once (about 10 s a test saved)."""
    root = tmp_path_factory.mktemp("champion")
    return train_champion(root, POLICY, counts={"train": 60, "val": 30, "test": 30})


@pytest.fixture
def deployed(_champion, tiny_settings):
    """A copy of the module's champion workspace that this test may change at will."""
    trained, source, _ = _champion
    copy_workspace(trained, tiny_settings.workspace_dir)
    tiny_settings.policy_file.write_text(POLICY)
    return tiny_settings, source


def _copy_test_images(source: Path, out: Path, degrade: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for path in sorted((source / "test").rglob("*.png")):
        target = out / path.parent.name / path.name  # nested: any depth is read
        target.parent.mkdir(parents=True, exist_ok=True)
        if degrade:
            a = np.asarray(Image.open(path)).astype(float)
            a = 128 + (a - 128) * 0.15 + rng.normal(0, 40, a.shape)
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(target)
        else:
            shutil.copyfile(path, target)
    return out


def _monitoring_runs(settings) -> list:
    return MlflowStore(settings).runs(EXPERIMENT)


def test_a_batch_like_the_test_split_is_estimated_without_alarm(deployed, tmp_path):
    settings, source = deployed
    batch = _copy_test_images(source, tmp_path / "batch")
    result = tai("monitor", str(batch), "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert list(answer)[: len(KEYS)] == KEYS
    assert answer["model_version"] == "1" and answer["n_images"] == 90
    assert answer["alarm"] is False and answer["reasons"] == []
    low, high = answer["estimated_accuracy_lower"], answer["estimated_accuracy_upper"]
    assert low <= answer["estimated_accuracy"] <= high
    assert answer["estimated_accuracy"] >= 0.9  # the tiny task is easy: the test split is
    assert Path(answer["report"]).is_file()
    html = Path(answer["report"]).read_text()
    assert "No alarm: every monitoring rule holds" in html and "Detector self-test" in html
    (run,) = _monitoring_runs(settings)
    assert run.data.tags[tags.MODEL_VERSION] == "1"
    assert run.data.tags[tags.BATCH_ID] == answer["batch_id"]
    assert run.data.metrics["estimated_accuracy"] == pytest.approx(answer["estimated_accuracy"])
    # nothing to review, no branch
    assert tai("data", "log", f"review/{answer['batch_id']}").exit_code == 1


def test_a_degraded_batch_alarms_once_per_episode_and_goes_to_review(deployed, tmp_path):
    settings, source = deployed
    batch = _copy_test_images(source, tmp_path / "batch", degrade=True)
    first = json.loads(tai("monitor", str(batch), "--json").stdout)
    assert first["alarm"] is True and first["new_alarm"] is True
    assert any(r.startswith("FAIL: deferral_p_value") for r in first["reasons"])
    branch = first["review_branch"]
    assert branch == f"review/{first['batch_id']}" and first["review_images"] == 90
    store_files = tai("data", "diff", "main", branch).stdout.splitlines()
    assert f"added    review/{first['batch_id']}/to_label.csv" in store_files
    version = MlflowStore(settings).get_version("1")
    assert version.tags[tags.MONITOR_ALARM]  # the failing rules of the episode
    # The same condition again: still an alarm, but not a new episode (no second event).
    again = json.loads(tai("monitor", str(batch), "--json").stdout)
    assert again["alarm"] is True and again["new_alarm"] is False and again["event_id"] is None
    assert len(_monitoring_runs(settings)) == 2
    html = Path(first["report"]).read_text()
    assert "ALARM:" in html and branch in html


def test_the_review_manifest_suggests_labels_and_names_why(deployed, tmp_path):
    from flows.stores import make_data_store

    settings, source = deployed
    batch = _copy_test_images(source, tmp_path / "batch", degrade=True)
    first = json.loads(tai("monitor", str(batch), "--json").stdout)
    store = make_data_store(settings)
    root = store.materialize(store.resolve(first["review_branch"]))
    manifest = root / "review" / first["batch_id"] / "to_label.csv"
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 90
    assert set(rows[0]) == {"path", "suggested_label", "confidence", "reason", "label"}
    assert {r["suggested_label"] for r in rows} <= {"0", "1", "2"}
    assert all((manifest.parent / r["path"]).is_file() for r in rows)
    confidences = [float(r["confidence"]) for r in rows]
    assert confidences == sorted(confidences)  # least confident first


def test_a_batch_on_a_data_branch_is_monitored_by_ref_and_prefix(deployed, tmp_path):
    from flows.stores import make_data_store

    settings, source = deployed
    batch = _copy_test_images(source, tmp_path / "inbox" / "incoming" / "day1")
    store = make_data_store(settings)
    store.create_branch("inbox", "main")
    store.upload("inbox", tmp_path / "inbox")
    commit = store.commit("inbox", "day 1 of production", {"source": "tests"})
    assert batch.is_dir()
    result = tai("monitor", "--ref", "inbox", "--prefix", "incoming/day1", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["n_images"] == 90 and answer["data_commit"] == commit
    (run,) = _monitoring_runs(settings)
    assert run.data.tags[tags.DATA_COMMIT] == commit


def _one_line(result, pattern: str) -> None:
    import re

    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and re.search(pattern, lines[-1]), result.stderr
    assert all(" done in " in line for line in lines[:-1]), result.stderr


def test_every_bad_input_is_one_line_and_writes_nothing(deployed, tmp_path):
    settings, source = deployed
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line(tai("monitor", str(empty)), r"empty holds nothing; put the batch's images")
    text = tmp_path / "text"
    text.mkdir()
    (text / "notes.txt").write_text("not an image")
    _one_line(tai("monitor", str(text)), r"holds 1 files, none of them an image")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copyfile(next((source / "test").rglob("*.png")), one / "a.png")
    _one_line(tai("monitor", str(one)), r"holds a single image; a batch needs at least 2")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    (broken / "b.png").write_bytes(b"not a png either")
    _one_line(tai("monitor", str(broken)), r"a.png in .*broken")
    batch = _copy_test_images(source, tmp_path / "batch")
    _one_line(
        tai("monitor", str(batch), "--model-version", "7"),
        r"model `tai-classifier` has no version '7'; versions: 1",
    )
    _one_line(tai("monitor"), r"give a FOLDER of images, or --ref REF --prefix PATH")
    _one_line(tai("monitor", "--ref", "main"), r"--ref needs --prefix")
    _one_line(
        tai("monitor", "--ref", "main", "--prefix", "nowhere"),
        r"has no folder 'nowhere'; pass --prefix",
    )
    settings.policy_file.write_text(POLICY + "  - metric: estimated_acuracy\n    min: 0.9\n")
    _one_line(
        tai("monitor", str(batch)),
        r"monitoring rule 4: unknown metric 'estimated_acuracy'; did you mean",
    )
    settings.policy_file.write_text("version: 1\ngates: [{metric: accuracy, min: 0}]\n")
    _one_line(tai("monitor", str(batch)), r"has no `monitoring:` rules, so no batch could ever")
    assert _monitoring_runs(settings) == []
    from flows.stores import make_data_store

    assert make_data_store(settings).list_branches() == ["main"]

    # Not a bad input: the model takes grayscale 16x16, production sends RGB and larger
    # images; they are converted and resized as training and serving do, not refused.
    settings.policy_file.write_text(POLICY)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(mixed / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 32), dtype=np.uint8)).save(mixed / f"g{i}.jpg")
    result = tai("monitor", str(mixed), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_images"] == 12


def test_a_version_registered_without_a_reference_says_how_to_get_one(deployed, tmp_path):
    settings, source = deployed
    registry = MlflowStore(settings)
    run_id = registry.get_version("1").run_id
    # The reference lives in the run's artifacts; without it the version cannot be monitored.
    folder = next(settings.workspace_dir.glob(f"mlartifacts/**/{run_id}/artifacts/monitoring"))
    shutil.rmtree(folder)
    batch = _copy_test_images(source, tmp_path / "batch")
    _one_line(
        tai("monitor", str(batch)),
        r"model version 1 has no monitoring reference \(it was registered before monitoring "
        r"existed\); retrain it with `tai run --force`",
    )
    assert _monitoring_runs(settings) == []


def test_trends_show_the_versions_and_the_batches(deployed, tmp_path):
    settings, source = deployed
    tai("monitor", str(_copy_test_images(source, tmp_path / "a")))
    tai("monitor", str(_copy_test_images(source, tmp_path / "b", degrade=True)))
    result = tai("trends")
    assert result.exit_code == 0, result.output
    html = Path(result.stdout.strip()).read_text()
    assert "Every gated metric across model versions" in html
    assert 'alt="accuracy (point)"' in html and 'alt="estimated_accuracy"' in html
