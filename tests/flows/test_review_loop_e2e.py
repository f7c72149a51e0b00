"""The monitoring loop closed through people, end to end on a real Prefect server:

champion → a degraded production batch → `tai monitor` alarms (``tai.monitor.alarm``
reaches the server) and commits the images to label to ``review/<batch>`` → a person
labels them into the training split and `tai data merge`s the branch → the merge's
``tai.data.merged`` triggers the served pipeline on the merge commit → a new version.

Every command runs as a subprocess, as in production (see test_trigger_e2e for why the
Oxen repository is only touched from subprocesses).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from infra.mlflow_store import MlflowStore
from tests.conftest import REPO_ROOT
from tests.flows.processes import free_port, wait_for
from tests.flows.test_trigger_e2e import TERMINAL_FAILURES, merged_commit

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
"""
# A person labels the review branch: each image's true class is the folder it came from
# (the batch keeps it in its file name, `<class>__<file>`), copied into train/<class>/.
LABEL_AND_COMMIT = """
import csv, shutil, sys, tempfile
from pathlib import Path
from flows.stores import make_data_store
from infra.settings import load_settings
settings = load_settings()
store = make_data_store(settings)
branch, batch = sys.argv[1], sys.argv[1].removeprefix("review/")
review = store.materialize(store.resolve(branch)) / "review" / batch
with tempfile.TemporaryDirectory() as tmp:
    for row in csv.DictReader(open(review / "to_label.csv")):
        image = review / row["path"]
        label = image.name.split("__")[0]
        target = Path(tmp) / settings.dataset / "train" / label
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, target / f"review-{image.name}")
    store.upload(branch, Path(tmp))
print(store.commit(branch, "label the review", {"source": "a person"}))
"""


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def degraded_batch(source: Path, out: Path) -> Path:
    rng = np.random.default_rng(0)
    for path in sorted((source / "test").rglob("*.png")):
        out.mkdir(parents=True, exist_ok=True)
        a = np.asarray(Image.open(path)).astype(float)
        a = 128 + (a - 128) * 0.15 + rng.normal(0, 40, a.shape)
        target = out / path.parent.name / path.name
        target.parent.mkdir(exist_ok=True)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(target)
    return out


def test_an_alarm_goes_to_review_and_its_merge_retrains(tiny_settings, tmp_path, processes):
    tiny_settings.policy_file.write_text(POLICY)
    first_commit = merged_commit(tmp_path)
    api = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PYTHONUNBUFFERED": "1",
    }
    port = api.split(":")[2].split("/")[0]
    processes.start(
        "prefect-server",
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
        {k: v for k, v in env.items() if k != "PREFECT_API_URL"},
    )
    http = httpx.Client(base_url=api, timeout=10)
    wait_for("the Prefect server", lambda: http.get("/health").status_code == 200, 120, processes)

    tai = [str(Path(sys.executable).parent / "tai")]
    run([*tai, "run", "--commit", first_commit], env)  # version 1, the champion
    batch = degraded_batch(tmp_path / "src" / "tiny", tmp_path / "production")
    answer = json.loads(run([*tai, "monitor", str(batch), "--json"], env).stdout)
    assert answer["alarm"] is True and answer["new_alarm"] is True and answer["event_id"]
    branch = answer["review_branch"]

    def alarm_event():
        body = {"filter": {"event": {"name": ["tai.monitor.alarm"]}}}
        return http.post("/events/filter", json=body).json()["events"]

    (event,) = wait_for("tai.monitor.alarm on the server", alarm_event, 60, processes)
    assert event["resource"]["prefect.resource.id"] == "tai.model.tai-classifier.1"
    assert event["payload"]["review_branch"] == branch

    processes.start(
        "serve",
        [sys.executable, "-c", "from flows.deployments import serve_pipeline; serve_pipeline()"],
        env,
    )

    def automation_loaded():
        automations = http.post("/automations/filter", json={}).json()
        return any(a["name"] == "tai-retrain-on-merge-oxen-data-main" for a in automations)

    wait_for("the served deployment's automation", automation_loaded, 120, processes)
    run([sys.executable, "-c", LABEL_AND_COMMIT, branch], env)
    merged = run([*tai, "data", "merge", branch], env).stdout
    merge_commit = merged.splitlines()[0].rsplit(" ", 1)[-1]  # "merged <branch> into main: <id>"
    assert f"emitted tai.data.merged for {merge_commit}" in merged

    def retrained():
        body = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED", *TERMINAL_FAILURES]}}}}
        runs = http.post("/flow_runs/filter", json=body).json()
        for r in runs:
            if r["parameters"].get("commit") == merge_commit:
                if r["state"]["type"] != "COMPLETED":
                    pytest.fail(f"the retraining ended {r['state']['type']}")
                return r
        return None

    wait_for("the retraining on the merge commit", retrained, 300, processes)
    versions = MlflowStore(tiny_settings).list_versions()
    assert [v.tags["tai.data.commit"] for v in versions] == [first_commit, merge_commit]
