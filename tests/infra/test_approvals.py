"""Approval records on model versions, against MLflow's registry on SQLite."""

from datetime import UTC, datetime

import pytest

from infra.approvals import (
    ApprovalError,
    approval_of,
    promote_if_approved,
    record_decision,
    request_approval,
)
from infra.mlflow_store import MlflowStore, RegistryError
from infra.settings import load_settings

pytestmark = pytest.mark.integration

NOON = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def register_dummy(store: MlflowStore, *, gates_passed: bool = True) -> str:
    """A model version whose "model" is one text file: enough for the registry's records."""
    run_id = store.create_run("approval-test", {})
    store.log_text(run_id, "not a real model", "model/weights.txt")
    tags = {"tai.gates.passed": str(gates_passed).lower()}
    if not gates_passed:
        tags["tai.gates.reasons"] = "FAIL: accuracy = 0.5000 < 0.9"
    return store.register(f"runs:/{run_id}/model", run_id, tags)


@pytest.fixture(scope="module")
def registry_workspace(tmp_path_factory):
    # One MLflow database for the module (creating one takes seconds); each test gets
    # its own registered model in it, so versions start at 1 and champions don't mix.
    return tmp_path_factory.mktemp("approvals") / ".tai"


@pytest.fixture
def store(registry_workspace, request):
    settings = load_settings(
        workspace=registry_workspace, registered_model_name=f"m-{request.node.name}"
    )
    return MlflowStore(settings)


def _tags(store: MlflowStore, version: str) -> dict[str, str]:
    return store.get_version(version).tags


def test_a_request_marks_the_version_pending_with_its_deadline(store):
    v = register_dummy(store)
    approval = request_approval(store, v, timeout_s=90, flow_run_id="run-1", poll_s=2, now=NOON)
    assert approval.pending and not approval.approved
    tags = _tags(store, v)
    assert tags["tai.approval"] == "pending"
    assert tags["tai.approval.requested_at"] == "2025-03-01T12:00:00+00:00"
    assert tags["tai.approval.deadline"] == "2025-03-01T12:01:30+00:00"  # noon + 90 s
    assert tags["tai.approval.flow_run_id"] == "run-1"
    assert approval.poll_s == 2.0
    assert not approval.expired(datetime(2025, 3, 1, 12, 1, 30, tzinfo=UTC))
    assert approval.expired(datetime(2025, 3, 1, 12, 1, 31, tzinfo=UTC))


def test_an_approval_is_recorded_and_only_then_moves_champion(store):
    v = register_dummy(store)
    request_approval(store, v)
    assert not promote_if_approved(store, v)
    assert store.champion() is None
    approval = record_decision(store, v, True, " alice ", "fairness report reviewed", now=NOON)
    assert approval.approved
    tags = _tags(store, v)
    assert tags["tai.approval"] == "approved"
    assert tags["tai.approval.reviewer"] == "alice"
    assert tags["tai.approval.reason"] == "fairness report reviewed"
    assert tags["tai.approval.decided_at"] == "2025-03-01T12:00:00+00:00"
    assert store.champion() is None  # recording moves nothing
    assert promote_if_approved(store, v)
    assert store.champion().version == v
    assert approval.explain() == f"version {v} approved by alice: fairness report reviewed"


def test_a_rejection_is_recorded_and_never_promotes(store):
    first, second = register_dummy(store), register_dummy(store)
    store.set_champion(first)
    request_approval(store, second)
    approval = record_decision(store, second, False, "bob", "worst-group accuracy too low")
    assert approval.state == "rejected"
    assert _tags(store, second)["tai.approval.reason"] == "worst-group accuracy too low"
    assert not promote_if_approved(store, second)
    assert store.champion().version == first


def test_a_rejection_without_a_reason_is_refused_and_changes_nothing(store):
    v = register_dummy(store)
    request_approval(store, v)
    before = _tags(store, v)
    with pytest.raises(ApprovalError, match=f"a rejection needs a reason; .*version {v}"):
        record_decision(store, v, False, "bob", "  ")
    assert _tags(store, v) == before


def test_a_decision_without_a_reviewer_is_refused(store):
    v = register_dummy(store)
    request_approval(store, v)
    before = _tags(store, v)
    with pytest.raises(ApprovalError, match=f"decision on version {v} needs a reviewer name"):
        record_decision(store, v, True, "", "fine")
    assert _tags(store, v) == before


def test_deciding_a_version_that_is_not_pending_is_refused(store):
    never_asked = register_dummy(store)
    refused = r"is not pending approval \(approval: {}\); nothing changed$"
    with pytest.raises(ApprovalError, match=f"^version {never_asked} " + refused.format("none")):
        record_decision(store, never_asked, True, "alice")
    assert "tai.approval" not in _tags(store, never_asked)

    decided = register_dummy(store)
    request_approval(store, decided)
    record_decision(store, decided, True, "alice")
    before = _tags(store, decided)
    with pytest.raises(ApprovalError, match=f"^version {decided} " + refused.format("approved")):
        record_decision(store, decided, False, "bob", "changed my mind")
    assert _tags(store, decided) == before


def test_deciding_a_version_that_does_not_exist_names_it_and_changes_nothing(store):
    v = register_dummy(store)
    before = store.list_versions()
    with pytest.raises(RegistryError, match=r"has no version '7'; versions: 1") as caught:
        record_decision(store, "7", True, "alice")
    assert not isinstance(caught.value, ApprovalError)
    assert store.list_versions() == before
    assert v == "1"


def test_a_version_that_failed_its_gates_cannot_be_put_up_or_approved(store):
    failed = register_dummy(store, gates_passed=False)
    with pytest.raises(ApprovalError, match=f"version {failed} failed its gates, .*FAIL: accuracy"):
        request_approval(store, failed)
    assert "tai.approval" not in _tags(store, failed)
    # Even if a tag says pending (set by hand), an approval is refused; a rejection is not.
    store.set_version_tag(failed, "tai.approval", "pending")
    with pytest.raises(ApprovalError, match=f"version {failed} failed its gates and cannot be"):
        record_decision(store, failed, True, "alice", "looks fine to me")
    assert approval_of(store, failed).pending
    assert record_decision(store, failed, False, "alice", "gates failed").state == "rejected"


def test_a_decided_version_cannot_be_put_up_again(store):
    v = register_dummy(store)
    request_approval(store, v)
    record_decision(store, v, False, "bob", "not now")
    with pytest.raises(ApprovalError, match=f"version {v} was rejected already .*register a new"):
        request_approval(store, v)


def test_a_timeout_must_be_positive(store):
    v = register_dummy(store)
    with pytest.raises(ValueError, match=r"timeout_s must be > 0 seconds, got 0"):
        request_approval(store, v, timeout_s=0)
