"""Human approval on the embedded stack: a flow run paused for a typed answer (Prefect's
ephemeral API), decided through the same function as `tai approve`/`tai reject`, with the
decision recorded on the model version (MLflow on SQLite)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
import typer
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.states import Paused, Running
from typer.testing import CliRunner

from flows.cli.approval import approve, reject
from flows.tasks.approval import ApprovalInput, await_approval, decide
from infra.approvals import Approval, ApprovalError, approval_of, request_approval
from infra.mlflow_store import MlflowStore
from infra.settings import Settings, load_settings
from tests.infra.test_approvals import register_dummy

pytestmark = pytest.mark.integration

# Generous: the first flow run of a test session starts Prefect's ephemeral server.
STARTUP_S = 150


@task(cache_policy=NO_CACHE)
def promotion_step(settings: Settings, version: str, timeout_s: int) -> Approval:
    """What the pipeline's promotion does when the policy asks for approval."""
    from infra.approvals import promote_if_approved

    store = MlflowStore(settings)
    approval = await_approval(store, version, timeout_s=timeout_s, poll_interval_s=0.5)
    promote_if_approved(store, version)
    return approval


@flow(name="approval-test")
def approval_flow(settings: Settings, version: str, timeout_s: int) -> Approval:
    return promotion_step(settings, version, timeout_s)


class FlowInThread:
    """The flow in a daemon thread, as the pipeline's own process would run it."""

    def __init__(self, settings: Settings, version: str, timeout_s: int = 60) -> None:
        self.box: dict[str, object] = {}
        self.thread = threading.Thread(
            target=self._run, args=(settings, version, timeout_s), daemon=True
        )
        self.thread.start()

    def _run(self, settings: Settings, version: str, timeout_s: int) -> None:
        try:
            self.box["result"] = approval_flow(settings, version, timeout_s)
        except BaseException as exc:
            self.box["error"] = exc

    def result(self, timeout_s: float = 60) -> Approval:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"the flow did not finish within {timeout_s} s"
        if "error" in self.box:
            raise self.box["error"]
        return self.box["result"]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.25)


def flow_run_state(flow_run_id: str):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(flow_run_id)).state


@pytest.fixture(scope="module")
def module_workspace(tmp_path_factory):
    # One MLflow database for the module (creating one takes seconds); each test has its
    # own registered model in it.
    return tmp_path_factory.mktemp("approval") / ".tai"


@pytest.fixture
def settings(module_workspace, request, monkeypatch):
    """Settings in the environment too, as the CLI reads them."""
    monkeypatch.chdir(module_workspace.parent)
    monkeypatch.setenv("TAI_WORKSPACE", str(module_workspace))
    monkeypatch.setenv("TAI_REGISTERED_MODEL_NAME", f"m-{request.node.name}")
    settings = load_settings()
    # The CLI sets this with setdefault; monkeypatch puts the old value back afterwards.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    return settings


@pytest.fixture
def store(settings):
    return MlflowStore(settings)


def tai(*args: str):
    cli = typer.Typer()
    cli.command("approve")(approve)
    cli.command("reject")(reject)
    return CliRunner().invoke(cli, list(args))


def one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# -- through a paused flow run -------------------------------------------------------------
@pytest.mark.slow
def test_approve_resumes_the_paused_flow_run_which_records_it_and_promotes(settings, store):
    v = register_dummy(store)
    running = FlowInThread(settings, v)
    wait_until(lambda: approval_of(store, v).pending, STARTUP_S, "the approval request")
    assert store.champion() is None

    outcome = decide(store, v, approve=True, reviewer="alice", reason="trust report read")

    approval = running.result()
    assert approval.approved and approval.reviewer == "alice"
    assert approval.reason == "trust report read"
    assert outcome.flow_run_id == approval.flow_run_id  # the flow run recorded it, not the CLI
    assert store.champion().version == v
    assert outcome.describe() == (
        f"approved version {v} (reviewer alice: trust report read); resumed flow run "
        f"{approval.flow_run_id}, which recorded it; `champion` is version {v}"
    )
    assert flow_run_state(approval.flow_run_id).is_completed()


@pytest.mark.slow
def test_reject_from_the_cli_resumes_the_flow_run_and_champion_stays(settings, store):
    old, new = register_dummy(store), register_dummy(store)
    store.set_champion(old)
    running = FlowInThread(settings, new)
    wait_until(lambda: approval_of(store, new).pending, STARTUP_S, "the approval request")

    result = tai("reject", new, "--reason", "worst-group accuracy too low", "--reviewer", "bob")

    assert result.exit_code == 0, result.output
    approval = running.result()
    assert approval.state == "rejected" and approval.reviewer == "bob"
    assert approval.reason == "worst-group accuracy too low"
    assert store.champion().version == old
    assert one_line(result) == (
        f"rejected version {new} (reviewer bob: worst-group accuracy too low); resumed flow "
        f"run {approval.flow_run_id}, which recorded it; `champion` stays at version {old}"
    )


@pytest.mark.slow
def test_a_timeout_rejects_and_the_flow_run_still_completes(settings, store):
    v = register_dummy(store)
    approval = FlowInThread(settings, v, timeout_s=2).result(STARTUP_S)
    assert approval.state == "rejected"
    assert approval.reviewer == "tai (timeout)"
    assert approval.reason == "no decision within 2 s (timeout rejects)"
    assert store.champion() is None
    # Prefect leaves a timed-out pause Paused and would fail the run; it completes instead.
    assert flow_run_state(approval.flow_run_id).is_completed()
    late = tai("approve", v, "--reviewer", "alice")
    assert one_line_error(late) == (
        f"error: version {v} is not pending approval (approval: rejected); nothing changed"
    )


@pytest.mark.slow
def test_an_invalid_answer_from_the_prefect_ui_rejects(settings, store):
    v = register_dummy(store)
    running = FlowInThread(settings, v)
    wait_until(lambda: approval_of(store, v).pending, STARTUP_S, "the approval request")
    flow_run_id = UUID(approval_of(store, v).flow_run_id)
    wait_until(lambda: flow_run_state(str(flow_run_id)).is_paused(), 30, "the pause")
    # The UI's form checks only the JSON schema: a rejection without a reason gets through.
    resume_flow_run(flow_run_id, run_input={"approve": False, "reviewer": "carol", "reason": ""})
    approval = running.result()
    assert approval.state == "rejected"
    assert approval.reason.startswith("invalid answer from the Prefect UI (")
    assert "a rejection needs a reason" in approval.reason
    assert store.champion() is None


# -- without a waiting flow run ------------------------------------------------------------
def test_with_no_flow_run_waiting_the_cli_records_and_promotes(store):
    v = register_dummy(store)
    request_approval(store, v, timeout_s=3600)  # e.g. asked by a process that is gone
    result = tai("approve", v, "--reviewer", "alice")
    assert result.exit_code == 0, result.output
    assert one_line(result) == (
        f"approved version {v} (reviewer alice); recorded in the registry (no flow run was "
        f"waiting); `champion` is version {v}"
    )
    assert approval_of(store, v).approved
    assert store.champion().version == v


def test_approve_without_reviewer_records_the_login(store, monkeypatch):
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "dana")
    v = register_dummy(store)
    request_approval(store, v, timeout_s=3600)
    result = tai("approve", v)
    assert result.exit_code == 0, result.output
    assert approval_of(store, v).reviewer == "dana"


@flow(name="approval-process-gone")
def gone() -> None:
    """Never runs: its flow run is made paused by hand, as if its process had died."""


@pytest.mark.slow
def test_a_paused_flow_run_that_does_not_answer_is_decided_here(store):
    v = register_dummy(store)
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(gone, state=Running())
        paused = Paused(timeout_seconds=600, pause_key="tai-approval-vX", reschedule=False)
        client.set_flow_run_state(run.id, paused, force=True)
    request_approval(store, v, timeout_s=600, flow_run_id=str(run.id), poll_s=0.5)

    outcome = decide(store, v, approve=True, reviewer="alice", answer_timeout_s=1)

    assert outcome.flow_run_id is None
    assert f"flow run {run.id} did not answer within 1 s" in outcome.note
    assert approval_of(store, v).approved
    assert store.champion().version == v


def test_an_expired_request_with_no_flow_run_waiting_cannot_be_approved(store):
    v = register_dummy(store)
    request_approval(store, v, timeout_s=60, now=datetime.now(UTC) - timedelta(hours=1))
    result = tai("approve", v, "--reviewer", "alice")
    assert "(a timeout rejects); nothing changed" in one_line_error(result)
    assert approval_of(store, v).pending and store.champion() is None
    # A rejection is still recorded: it only confirms what the timeout meant.
    assert tai("reject", v, "--reason", "too late", "--reviewer", "bob").exit_code == 0
    assert approval_of(store, v).state == "rejected"


# -- refusals: one line, exit 1, registry unchanged ----------------------------------------
def test_approving_a_version_that_is_not_pending_is_refused(store):
    v = register_dummy(store)
    before = store.get_version(v).tags
    result = tai("approve", v, "--reviewer", "alice")
    assert one_line_error(result) == (
        f"error: version {v} is not pending approval (approval: none); nothing changed"
    )
    assert store.get_version(v).tags == before and store.champion() is None


def test_approving_a_version_that_does_not_exist_is_refused(store):
    register_dummy(store)
    before = store.list_versions()
    result = tai("approve", "7", "--reviewer", "alice")
    assert "has no version '7'; versions: 1" in one_line_error(result)
    assert store.list_versions() == before


def test_rejecting_without_a_reason_is_refused(store):
    v = register_dummy(store)
    request_approval(store, v)
    before = store.get_version(v).tags
    result = tai("reject", v, "--reviewer", "bob")
    assert "a rejection needs a reason; pass --reason" in one_line_error(result)
    assert store.get_version(v).tags == before


def test_awaiting_approval_outside_a_flow_run_is_refused(store):
    v = register_dummy(store)
    with pytest.raises(ApprovalError, match=f"approval of version {v} must be awaited inside"):
        await_approval(store, v, timeout_s=5)
    assert not approval_of(store, v).pending


def test_the_answer_needs_a_reason_to_reject():
    assert ApprovalInput(approve=True, reviewer="alice").reason == ""
    with pytest.raises(ValueError, match="a rejection needs a reason"):
        ApprovalInput(approve=False, reviewer="alice", reason=" ")
    with pytest.raises(ValueError, match="reviewer must not be blank"):
        ApprovalInput(approve=True, reviewer="  ")


def test_an_unreachable_prefect_api_refuses_and_changes_nothing(store):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    v = register_dummy(store)
    request_approval(store, v, flow_run_id="8c4ad4c1-7e2b-4b55-9d1b-3f1cbdc0a001", poll_s=0.5)
    before = store.get_version(v).tags
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with pytest.raises(ApprovalError, match="cannot ask the Prefect API at http://127.0.0.1:9"):
            decide(store, v, approve=True, reviewer="alice", answer_timeout_s=1)
    assert store.get_version(v).tags == before and store.champion() is None
