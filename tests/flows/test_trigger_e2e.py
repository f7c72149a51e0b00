"""Event-driven retraining end to end, on real processes talking over 127.0.0.1.

A Prefect server, the served deployments (`serve_pipeline`) and the webhook receiver
(`serve_webhook`) each run as a subprocess, as they would in production. A lakeFS-format
post-merge call to the receiver carries the tiny Oxen repository's commit (lakeFS cannot run
here; the receiver is configured with ``store="oxen"`` so the event names the store the
pipeline reads). The test waits for the on-data-merge deployment's flow run to complete and
finds the model version in MLflow with that commit as its data lineage.

Every subprocess is started in its own process group and stopped in a finalizer.

Oxen keeps a repository's refs database locked for the life of the process that opened it,
so the repository is made and merged in a subprocess: the flow run, in yet another process,
could not read it while this one holds the lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infra.mlflow_store import MlflowStore
from infra.webhook import SECRET_HEADER
from tests.conftest import REPO_ROOT, write_tiny_dataset
from tests.flows.processes import free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SECRET = "e2e-shared-secret-0123456789"
DEPLOYMENT = "tai-pipeline/on-data-merge"
TERMINAL_FAILURES = {"FAILED", "CRASHED", "CANCELLED"}
# Run in a subprocess: branch `new-scans`, commit the tiny dataset there, merge into `main`.
MAKE_AND_MERGE = """
import sys
from pathlib import Path
from flows.stores import make_data_store
from infra.settings import load_settings
store = make_data_store(load_settings())
store.create_repository("main")
store.create_branch("new-scans", "main")
store.upload("new-scans", Path(sys.argv[1]))
store.commit("new-scans", "new scans", {"source": "tests"})
print(store.merge("new-scans", "main"))
"""


def merged_commit(tmp_path: Path) -> str:
    """Make the tiny repository in a subprocess (see the module docstring); the merge commit."""
    write_tiny_dataset(tmp_path / "src")
    done = subprocess.run(
        [sys.executable, "-c", MAKE_AND_MERGE, str(tmp_path / "src")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_lakefs_merge_webhook_runs_the_pipeline_on_the_merged_commit(
    tiny_settings, tmp_path, processes
):
    started = time.monotonic()
    commit = merged_commit(tmp_path)
    api = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **os.environ,  # TAI_* of the tiny settings
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # No nightly run may start while the test waits for the triggered one.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    port = api.split(":")[2].split("/")[0]
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    processes.start(
        "prefect-server",
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
        server_env,
    )
    http = httpx.Client(base_url=api, timeout=10)
    wait_for("the Prefect server", lambda: http.get("/health").status_code == 200, 120, processes)

    processes.start(
        "serve",
        [sys.executable, "-c", "from flows.deployments import serve_pipeline; serve_pipeline()"],
        env,
    )
    webhook_port = free_port()
    processes.start(
        "webhook",
        [
            sys.executable,
            "-c",
            "import os; from infra.webhook import serve_webhook; "
            f"serve_webhook(port={webhook_port}, secret=os.environ['E2E_WEBHOOK_SECRET'], "
            f"workspace={str(tmp_path / 'webhook-ws')!r}, store='oxen')",
        ],
        {**env, "E2E_WEBHOOK_SECRET": SECRET},
    )
    webhook = httpx.Client(base_url=f"http://127.0.0.1:{webhook_port}", timeout=30)

    def deployment_id():
        response = http.get(f"/deployments/name/{DEPLOYMENT}")
        return response.status_code == 200 and response.json()["id"]

    def automation_loaded():
        automations = http.post("/automations/filter", json={}).json()
        return any(a["name"] == "tai-retrain-on-merge-oxen-data-main" for a in automations)

    dep_id = wait_for("the served deployment", deployment_id, 120, processes)
    wait_for("the deployment's automation", automation_loaded, 30, processes)
    wait_for("the webhook", lambda: webhook.get("/health").status_code == 200, 60, processes)

    def flow_runs():
        body = {"deployments": {"id": {"any_": [dep_id]}}}
        return http.post("/flow_runs/filter", json=body).json()

    body = {
        "event_type": "post-merge",
        "event_time": "2025-11-28T07:52:00Z",
        "action_name": "tai-retrain",
        "hook_id": "tai_retrain_webhook",
        "repository_id": tiny_settings.data_repository,
        "branch_id": "main",
        "source_ref": "new-scans",
        "merge_source": "new-scans",
        "commit_id": commit,
        "commit_message": "Merge 'new-scans' into 'main'",
        "committer": "tests",
        "commit_metadata": {},
    }
    forged = webhook.post("/webhooks/lakefs", json=body, headers={SECRET_HEADER: "forged"})
    assert forged.status_code == 401

    accepted = webhook.post("/webhooks/lakefs", json=body, headers={SECRET_HEADER: SECRET})
    assert accepted.status_code == 202, accepted.text
    replay = webhook.post("/webhooks/lakefs", json=body, headers={SECRET_HEADER: SECRET})
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"

    def completed_run():
        runs = flow_runs()
        for run in runs:
            state = (run.get("state") or {}).get("type")
            if state in TERMINAL_FAILURES:
                pytest.fail(f"flow run {run['name']} ended {state}:\n{processes.tail('serve')}")
        done = [r for r in runs if (r.get("state") or {}).get("type") == "COMPLETED"]
        return done[0] if done else None

    budget = max(60.0, 230 - (time.monotonic() - started))
    run = wait_for("the triggered flow run to complete", completed_run, budget, processes)
    assert run["parameters"]["commit"] == commit
    assert run["parameters"]["branch"] == "main"

    # One event reached Prefect (not the forged call, not the replay), hence one flow run.
    events = http.post(
        "/events/filter", json={"filter": {"event": {"name": ["tai.data.merged"]}}}
    ).json()
    assert events["total"] == 1
    (event,) = events["events"]
    assert event["resource"]["prefect.resource.id"] == "tai.data.oxen.data.main"
    assert event["payload"]["commit_id"] == commit
    assert event["payload"]["merge_source"] == "new-scans"
    assert len(flow_runs()) == 1

    versions = MlflowStore(tiny_settings).list_versions()
    assert [v.tags["tai.data.commit"] for v in versions] == [commit]
