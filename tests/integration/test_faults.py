"""Faults on the production stack, each with what must hold afterwards: nothing lost, nothing
half-done that a later run would trust. RELIABILITY.md has the outcome of each.

A run is started by a merge (``tai data merge`` emits tai.data.merged; the worker runs the
on-data-merge deployment) or by the webhook; the fault is injected when the run is at the
stage named by the test (seen in Prefect's task runs or in the registry), and the services
are put back afterwards whatever happened (the ``idle`` fixture).
"""

from __future__ import annotations

import concurrent.futures
import random
import time
import uuid

import httpx
import pytest

from infra.stack.processes import children_of, kill_now, tail
from infra.webhook import SECRET_HEADER
from tests.integration.conftest import MANUAL, ON_MERGE, post_merge_body

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Longer than the worker's MLflow client keeps retrying a call (stack.env: about 7 s), so a
# call made during the outage fails; short enough that a bounded retry can outlast it.
OUTAGE_S = 25
ARTIFACT_LIMIT = 256 * 1024  # bytes: the weights (about 850 KB) do not fit, the rest does


# -- helpers -----------------------------------------------------------------------------
def report(side, line: str) -> None:
    """An observation for RELIABILITY.md: printed (``pytest -rA`` shows it) and kept for
    the diagnostics of a failure."""
    print(line)
    side.log.append(line)


def started_run(side, commit: str, since: float) -> dict:
    """The on-data-merge flow run of ``commit`` once it exists."""

    def find():
        runs = [r for r in side.flow_runs(ON_MERGE, since) if r["parameters"]["commit"] == commit]
        return runs[0] if runs else None

    return side.wait(f"a flow run of {commit}", find, 180)


def wait_task(side, run_id: str, prefix: str, timeout: float = 300) -> str:
    """Wait until the flow run's task ``prefix`` runs (or has run); returns its state."""

    def state():
        found = side.task_state(run_id, prefix)
        run_state = side.api.get(f"/flow_runs/{run_id}").json()["state"]["type"]
        if found is None and run_state in ("COMPLETED", "FAILED", "CRASHED"):
            raise AssertionError(
                f"the run ended {run_state} before {prefix} started:\n" + side.flow_run_logs(run_id)
            )
        return found if found in ("RUNNING", "COMPLETED", "FAILED") else None

    return side.wait(f"task {prefix} of {run_id}", state, timeout, interval=0.2)


def snapshot(side) -> tuple[list[str], str | None]:
    return [v.version for v in side.versions()], side.champion()


def assert_nothing_registered(side, commit: str, before: tuple[list[str], str | None]) -> None:
    versions, champion = before
    assert side.versions_of(commit) == [], "a version of the failed run is registered"
    assert [v.version for v in side.versions()] == versions
    assert side.champion() == champion, "champion moved"


def assert_mlflow_run_failed(side, commit: str) -> None:
    """The failed run's MLflow run is FAILED: marked by the run itself (it tries for 40 s,
    FAIL_RUN_RETRY_S) or, when the outage outlasted that, by the next pipeline run (BUG-4);
    so with a fault that takes MLflow away, call this after the next run."""
    runs = side.mlflow_runs_of(commit)
    assert runs, f"no MLflow run of {commit}"
    statuses = [r.info.status for r in runs]
    assert statuses == ["FAILED"] * len(runs), f"MLflow run(s) of the failed run: {statuses}"


def assert_next_merge_succeeds(side) -> None:
    """After the fault is gone, the next merge retrains, registers and moves champion."""
    champion = side.champion()
    since = time.time()
    commit = side.merge(side.branch_with_new_images())
    (run,) = side.wait_runs(1, since=since, commit=commit)
    assert run["state"]["type"] == "COMPLETED", side.flow_run_logs(run["id"])
    (version,) = side.versions_of(commit)
    assert side.champion() == version.version != champion


def assert_rerun_completes(side, commit: str) -> None:
    """Running the pipeline again on the commit (the manual deployment, as an operator
    would) completes, and the commit has one version, now champion.

    (Setting the crashed run itself back to SCHEDULED is racy: the worker reports the
    killed process's exit a second time, up to ~30 s later, and that CRASHED state
    overwrites the new one.)"""
    rerun = side.wait_run(side.run_deployment(MANUAL, commit=commit), timeout=600)
    assert rerun["state"]["type"] == "COMPLETED", side.flow_run_logs(rerun["id"])
    (version,) = side.versions_of(commit)
    assert side.champion() == version.version


def flow_run_process(side) -> int:
    """The pid of the process the worker started for its one running flow run."""
    worker = side.stack.record("worker")
    found = [
        pid
        for pid in children_of(worker.pid)
        if b"prefect.engine" in open(f"/proc/{pid}/cmdline", "rb").read()
    ]
    assert len(found) == 1, f"expected one flow-run process under the worker, found {found}"
    return found[0]


# -- MLflow ------------------------------------------------------------------------------
def test_mlflow_stopped_during_training(registry, idle):
    """The run fails; nothing is registered; its MLflow run ends FAILED, marked by the run
    itself once the server is back or by the next run (BUG-4)."""
    side = idle
    branch = side.branch_with_new_images()
    before = snapshot(side)
    since = time.time()
    commit = side.merge(branch)
    run = started_run(side, commit, since)
    wait_task(side, run["id"], "train_model")

    side._expected_down = ("mlflow",)
    side.stack.stop_service("mlflow", kill=True)
    time.sleep(OUTAGE_S)
    side.stack.start_service("mlflow")
    side._expected_down = ()
    final = side.wait_run(run["id"])

    assert final["state"]["type"] == "FAILED", final["state"]
    assert_nothing_registered(side, commit, before)
    report(side, f"mlflow stopped in training: MLflow run(s) {_statuses(side, commit)}")
    assert_next_merge_succeeds(side)
    assert_mlflow_run_failed(side, commit)


def _statuses(side, commit: str) -> list[str]:
    return [r.info.status for r in side.mlflow_runs_of(commit)]


def test_mlflow_stopped_during_registration(registry, idle):
    """Once the version exists, the server goes: the run fails, `champion` does not move,
    and the version, which the run could not delete, is `pending`: nothing reads it and
    the next run deletes it (BUG-5)."""
    side = idle
    branch = side.branch_with_new_images()
    before = snapshot(side)
    since = time.time()
    commit = side.merge(branch)
    run = started_run(side, commit, since)
    wait_task(side, run["id"], "register_and_promote")
    # The moment the version exists and before it is complete (report, alias).
    side.wait("the new version", lambda: side.versions_of(commit, pending=True), 300, interval=0.1)

    side._expected_down = ("mlflow",)
    side.stack.stop_service("mlflow", kill=True)
    time.sleep(OUTAGE_S)
    side.stack.start_service("mlflow")
    side._expected_down = ()
    final = side.wait_run(run["id"])

    assert final["state"]["type"] == "FAILED", final["state"]
    assert_nothing_registered(side, commit, before)  # a pending version is not registered
    left = [
        (v.version, v.tags.get("tai.registration")) for v in side.versions_of(commit, pending=True)
    ]
    report(
        side,
        f"mlflow stopped in registration: left {left}; MLflow run(s) {_statuses(side, commit)}",
    )
    assert all(state == "pending" for _, state in left), left
    assert_next_merge_succeeds(side)
    assert side.versions_of(commit, pending=True) == [], "the next run left the pending version"
    assert_mlflow_run_failed(side, commit)


# -- the worker ----------------------------------------------------------------------------
def test_flow_run_process_killed_mid_fit(registry, idle):
    """The process that trains dies (OOM killer, SIGKILL): the worker reports the run
    crashed; running it again completes; one version for the commit."""
    side = idle
    branch = side.branch_with_new_images()
    before = snapshot(side)
    since = time.time()
    commit = side.merge(branch)
    run = started_run(side, commit, since)
    wait_task(side, run["id"], "train_model")

    kill_now(flow_run_process(side))
    crashed = side.wait_run(run["id"], timeout=120)

    assert crashed["state"]["type"] == "CRASHED", crashed["state"]
    assert_nothing_registered(side, commit, before)
    assert_rerun_completes(side, commit)


def test_worker_killed_mid_fit(registry, idle):
    """The worker and the flow run it started die together (the worker's machine or
    container goes): Prefect must mark the run crashed; a re-run completes; one version."""
    side = idle
    branch = side.branch_with_new_images()
    before = snapshot(side)
    since = time.time()
    commit = side.merge(branch)
    run = started_run(side, commit, since)
    wait_task(side, run["id"], "train_model")

    side._expected_down = ("worker",)
    worker = side.stack.record("worker")
    for pid in [*children_of(worker.pid), worker.pid]:
        kill_now(pid)
    side.stack.stop_service("worker")  # forget the dead pid
    side.stack.start_service("worker")
    side._expected_down = ()

    def crashed():
        state = side.api.get(f"/flow_runs/{run['id']}").json()["state"]
        return state if state["type"] in ("CRASHED", "FAILED", "COMPLETED") else None

    state = side.wait("Prefect to mark the run crashed", crashed, 240)
    assert state["type"] == "CRASHED", state
    assert_nothing_registered(side, commit, before)
    assert_rerun_completes(side, commit)


# -- two merges, close together ------------------------------------------------------------
def promotion_timeline(side, runs: list[dict]) -> list[dict]:
    """For each run: its version, when it read the champion (end of load_champion) and
    when it promoted (end of register_and_promote), from Prefect's task runs."""
    out = []
    for run in runs:
        tasks = {t["name"].rsplit("-", 1)[0]: t for t in side.task_runs(run["id"])}
        (version,) = side.versions_of(run["parameters"]["commit"])
        out.append(
            {
                "version": version.version,
                "compared_with_tag": version.tags.get("tai.champion.compared_with"),
                "read_champion": tasks["load_champion"]["end_time"],
                "promoted": tasks["register_and_promote"]["end_time"],
                "gates": version.tags.get("tai.gates.passed"),
            }
        )
    return out


def test_two_merges_seconds_apart_promote_only_what_beat_the_current_champion(registry, idle):
    """Two lakeFS merges 3 s apart (two post-merge calls; lakeFS merges have no Oxen lock):
    both runs finish, and the version that ends as champion was compared with the champion
    that was current when it was promoted (compare-and-set on the alias)."""
    side = idle
    first, second = side.branch_with_new_images(), side.branch_with_new_images()
    commits = [side.merge(first, emit=False), side.merge(second, emit=False)]
    old_champion = side.champion()
    hook = httpx.Client(base_url=side.stack.urls["webhook"], timeout=30)
    secret = {SECRET_HEADER: side.stack.webhook_secret}
    since = time.time()

    for i, commit in enumerate(commits):
        if i:
            time.sleep(3)
        response = hook.post("/webhooks/lakefs", json=post_merge_body(commit), headers=secret)
        assert response.status_code == 202, response.text
    runs = side.wait_runs(2, since=since, timeout=900)

    assert [r["state"]["type"] for r in runs] == ["COMPLETED", "COMPLETED"], [
        side.flow_run_logs(r["id"]) for r in runs
    ]
    timeline = sorted(promotion_timeline(side, runs), key=lambda t: t["promoted"])
    champion = side.champion()
    # The champion current when each run promoted: the previous promoter, or the old one.
    current = {timeline[0]["version"]: old_champion, timeline[1]["version"]: timeline[0]["version"]}
    if champion != old_champion:
        winner = next(t for t in timeline if t["version"] == champion)
        compared_with = winner["compared_with_tag"] or (
            # Without the tag: what the run read, i.e. the old champion if it read it before
            # the other run promoted.
            old_champion
            if winner["read_champion"]
            < min(t["promoted"] for t in timeline if t["version"] != champion)
            else current[champion]
        )
        report(side, f"timeline {timeline}; champion {champion} (was {old_champion})")
        assert compared_with == current[champion], (
            f"version {champion} became champion replacing version {current[champion]}, but "
            f"was compared with version {compared_with}; timeline: {timeline}"
        )


# -- PostgreSQL ------------------------------------------------------------------------------
def test_postgres_restarted_during_a_run(registry, idle):
    """Both servers keep their clients going through a restart of their database: the run
    completes, or fails cleanly (failed in Prefect and MLflow, nothing registered)."""
    side = idle
    branch = side.branch_with_new_images()
    before = snapshot(side)
    since = time.time()
    commit = side.merge(branch)
    run = started_run(side, commit, since)
    wait_task(side, run["id"], "train_model")

    side._expected_down = ("postgres",)
    side.stack.restart_service("postgres")
    side._expected_down = ()
    final = side.wait_run(run["id"])

    report(side, f"postgres restart: run ended {final['state']['type']}")
    assert final["state"]["type"] in ("COMPLETED", "FAILED"), final["state"]
    if final["state"]["type"] == "COMPLETED":
        (version,) = side.versions_of(commit)
        assert side.champion() == version.version
        assert side.mlflow.get_run(version.run_id).info.status == "FINISHED"
    else:
        assert_nothing_registered(side, commit, before)
        assert_mlflow_run_failed(side, commit)
    assert httpx.get(f"{side.stack.urls['mlflow']}/health").status_code == 200
    assert side.api.get("/health").json() is True
    if final["state"]["type"] == "FAILED":
        assert_next_merge_succeeds(side)


# -- the artifact store is full --------------------------------------------------------------
def test_artifact_store_out_of_space(registry, idle):
    """The MLflow server may write no file over 256 KiB (RLIMIT_FSIZE, standing in for a full
    disk): the run fails with an error that says so; a truncated file is never trusted: it
    belongs to no registered version, and the next run (space back) registers and loads."""
    side = idle
    branch = side.branch_with_new_images()
    before = snapshot(side)
    side.stack.restart_service("mlflow", fsize_limit=ARTIFACT_LIMIT)
    try:
        since = time.time()
        commit = side.merge(branch)
        run = started_run(side, commit, since)
        final = side.wait_run(run["id"])
    finally:
        side.stack.restart_service("mlflow")

    assert final["state"]["type"] == "FAILED", final["state"]
    message = final["state"]["message"] + side.flow_run_logs(run["id"])
    server_log = tail(side.stack.log_dir / "mlflow.log", 20000)
    report(side, f"out of space: flow run says {final['state']['message'][:600]}")
    assert "File too large" in server_log, "the server's log does not say why"
    assert_nothing_registered(side, commit, before)
    assert_mlflow_run_failed(side, commit)
    truncated = [
        p
        for p in side.stack.artifacts_dir.rglob("*")
        if p.is_file() and p.stat().st_size == ARTIFACT_LIMIT
    ]
    (mlflow_run,) = side.mlflow_runs_of(commit)
    assert all(mlflow_run.info.run_id in str(p) for p in truncated), truncated
    registered_runs = {v.run_id for v in side.versions()}
    assert not any(r in str(p) for p in truncated for r in registered_runs)
    # The client sees only "too many 500 error responses"; the error must say what the
    # artifact store refused, so that someone looks at the store (its log says why).
    assert "artifact store" in message and "state_dict.pt" in message, (
        f"the flow run's error does not say the artifact store refused the weights: "
        f"{final['state']['message'][:1000]}"
    )
    assert "refused weights/state_dict.pt (" in message and "is it full?" in message, (
        f"the flow run's error does not say the artifact store refused the weights: "
        f"{final['state']['message'][:1000]}"
    )
    assert_next_merge_succeeds(side)


# -- the webhook under a burst ---------------------------------------------------------------
BURST = 1000
REPLAYS = 100
FORGED = 20
PAGE = 50  # the most events /events/filter returns at once


def merged_events(
    side, resource: str, since: float, expected: set[str], timeout: float = 180
) -> dict[str, str]:
    """Every tai.data.merged event of ``resource`` that occurred after ``since``, as
    ``{event id: commit id}``, once the events of every ``expected`` commit have reached
    Prefect and nothing new arrived for a few seconds (or at ``timeout``).

    Prefect pages ``/events/filter`` by OFFSET over events sorted by ``occurred`` only, and
    its server writes received events in batches, later: while events still arrive (or
    among events of the same instant) one page can repeat another's event and skip
    another, so counting pages' events is not counting events. Instead each scan walks
    forwards by time (the next page starts at the last event's ``occurred``, inclusive),
    every event is kept by its id, and scans repeat until the set of commits is the
    expected one and one more scan a few seconds later adds no event.
    """
    from datetime import UTC, datetime, timedelta

    found: dict[str, str] = {}

    def scan() -> None:
        start = datetime.fromtimestamp(since, UTC)
        while True:
            body = {
                "filter": {
                    "event": {"name": ["tai.data.merged"]},
                    "resource": {"id": [resource]},
                    "occurred": {
                        "since": start.isoformat(),
                        "until": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
                    },
                    "order": "ASC",
                },
                "limit": PAGE,
            }
            response = side.api.post("/events/filter", json=body)
            response.raise_for_status()
            events = response.json()["events"]
            new = [e for e in events if e["id"] not in found]
            for event in events:
                found[event["id"]] = event["payload"]["commit_id"]
            if len(events) < PAGE:
                return
            last = datetime.fromisoformat(events[-1]["occurred"])
            if not new and last == start:  # a page of one instant seen already: step past it
                last += timedelta(microseconds=1)
            start = last

    deadline = time.monotonic() + timeout
    settled = None
    while time.monotonic() < deadline:
        before = len(found)
        scan()
        if set(found.values()) >= expected:
            if settled is not None and len(found) == before:
                return found
            settled = time.monotonic()
            time.sleep(5)  # one more scan: a late duplicate would show there
            continue
        time.sleep(3)
    return found


def test_webhook_burst_one_event_per_commit_and_every_forgery_refused(idle):
    """1,000 posts from 16 clients at once: 880 new commits, 100 replays of them, 20 with a
    wrong secret. Repository `burst` (no deployment listens to it, so no run starts)."""
    side = idle
    commits = [uuid.uuid4().hex for _ in range(BURST - REPLAYS - FORGED)]
    rng = random.Random(0)
    calls = [(c, side.stack.webhook_secret) for c in commits]
    calls += [(rng.choice(commits), side.stack.webhook_secret) for _ in range(REPLAYS)]
    calls += [(rng.choice(commits), f"forged-{i}") for i in range(FORGED)]
    rng.shuffle(calls)
    hook = side.stack.urls["webhook"]
    since = time.time()

    def post(call):
        commit, secret = call
        with httpx.Client(base_url=hook, timeout=60) as client:
            r = client.post(
                "/webhooks/lakefs",
                json=post_merge_body(commit, repository="burst"),
                headers={SECRET_HEADER: secret},
            )
            return commit, secret, r.status_code, r.json().get("status")

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(post, calls, timeout=300))
    elapsed = time.monotonic() - started

    forged = [r for r in results if r[1] != side.stack.webhook_secret]
    genuine = [r for r in results if r[1] == side.stack.webhook_secret]
    assert {r[2] for r in forged} == {401}
    accepted = [r[0] for r in genuine if r[2] == 202]
    assert sorted(accepted) == sorted(commits), "not exactly one 202 per commit"
    assert all(r[2] == 200 and r[3] == "duplicate" for r in genuine if r[2] != 202)
    report(side, f"burst: {BURST} posts in {elapsed:.1f} s ({BURST / elapsed:.0f}/s)")
    assert httpx.get(f"{hook}/health").status_code == 200

    seen = merged_events(side, "tai.data.oxen.burst.main", since - 5, set(commits))
    by_commit: dict[str, set[str]] = {}
    for event_id, commit in seen.items():
        by_commit.setdefault(commit, set()).add(event_id)
    assert set(by_commit) == set(commits), (
        f"{len(set(commits) - set(by_commit))} commit(s) without a tai.data.merged event, "
        f"{len(set(by_commit) - set(commits))} event(s) for a commit never posted"
    )
    twice = {c: sorted(ids) for c, ids in by_commit.items() if len(ids) > 1}
    assert not twice, f"two events for one commit: {dict(list(twice.items())[:5])}"
    assert side.flow_runs(None, since) == []
