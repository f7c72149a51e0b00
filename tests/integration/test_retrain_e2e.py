"""Retraining end to end on the production stack: a data merge becomes `tai.data.merged`, the
work pool's worker runs the on-data-merge deployment of prefect.yaml on the merge commit, the
version is registered on the MLflow server (Postgres) with its lineage, and `champion` moves.

Twice: once through the embedded store's ``tai data merge``, once through ``tai webhook``
with the body lakeFS's post-merge action sends (the data stays in the embedded Oxen store;
the receiver only needs the payload).
"""

from __future__ import annotations

import time

import httpx
import pytest

from infra.webhook import SECRET_HEADER
from tests.integration.conftest import MANUAL, ON_MERGE, post_merge_body

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LINEAGE = (
    "tai.data.store",
    "tai.data.repository",
    "tai.data.commit",
    "tai.code.version",
    "tai.policy.sha256",
    "tai.gates.passed",
    "tai.weights_sha256",
    "tai.model_sha256",
    "tai.report",
)


def check_registered(side, commit: str, champion_before: str | None) -> object:
    """One version for ``commit``, with its lineage, from a FINISHED run, now champion."""
    (version,) = side.versions_of(commit)
    missing = [t for t in LINEAGE if t not in version.tags]
    assert not missing, f"version {version.version} lacks {missing}: {version.tags}"
    assert version.tags["tai.data.store"] == "oxen"
    assert version.tags["tai.data.repository"] == "data"
    assert version.tags["tai.gates.passed"] == "true"
    run = side.mlflow.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tai.data.commit"] == commit
    # Artifacts live on the server (its --artifacts-destination), not on the worker's disk.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    assert (
        side.stack.artifacts_dir
        / run.info.artifact_uri.split(":", 1)[1].strip("/")
        / "weights"
        / "state_dict.pt"
    ).is_file()
    assert side.champion() == version.version != champion_before
    return version


def test_a_merge_retrains_on_the_merge_commit_and_moves_champion(registry, idle):
    side = idle
    branch = side.branch_with_new_images()
    before = side.champion()
    since = time.time()

    commit = side.merge(branch)

    (run,) = side.wait_runs(1, since=since, commit=commit)
    assert run["state"]["type"] == "COMPLETED", side.flow_run_logs(run["id"])
    assert run["parameters"] == {"branch": "main", "commit": commit}
    check_registered(side, commit, before)
    events = side.api.post(
        "/events/filter",
        json={
            "filter": {
                "event": {"name": ["tai.data.merged"]},
                "resource": {"id": ["tai.data.oxen.data.main"]},
            }
        },
    ).json()["events"]
    assert [e["payload"]["commit_id"] for e in events].count(commit) == 1


def test_a_lakefs_post_merge_webhook_retrains_on_its_commit(registry, idle):
    side = idle
    branch = side.branch_with_new_images()
    commit = side.merge(branch, emit=False)  # lakeFS merges; its action calls the webhook
    before = side.champion()
    hook = httpx.Client(base_url=side.stack.urls["webhook"], timeout=30)
    since = time.time()

    forged = hook.post(
        "/webhooks/lakefs",
        json=post_merge_body(commit, source=branch),
        headers={SECRET_HEADER: "forged"},
    )
    accepted = hook.post(
        "/webhooks/lakefs",
        json=post_merge_body(commit, source=branch),
        headers={SECRET_HEADER: side.stack.webhook_secret},
    )
    replay = hook.post(
        "/webhooks/lakefs",
        json=post_merge_body(commit, source=branch),
        headers={SECRET_HEADER: side.stack.webhook_secret},
    )

    assert forged.status_code == 401
    assert accepted.status_code == 202, accepted.text
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    (run,) = side.wait_runs(1, since=since, commit=commit)
    assert run["state"]["type"] == "COMPLETED", side.flow_run_logs(run["id"])
    version = check_registered(side, commit, before)
    assert len(side.flow_runs(ON_MERGE, since)) == 1
    assert len(side.flow_runs(MANUAL, since)) == 0
    assert version.tags["tai.data.commit"] == commit
