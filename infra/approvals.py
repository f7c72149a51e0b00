"""Human approval of a model version, recorded as tags on the version in the registry.

The paper leaves autonomy & control without a metric; its control here is a human in
the loop (EU AI Act Art. 14, human oversight): where the gate policy asks for it, a
version that passed every gate becomes ``champion`` only after a named reviewer
approved it. The registry is the record, so the decision outlives the process that
asked for it:

- ``tai.approval``: ``pending``, then ``approved`` or ``rejected``
- ``tai.approval.requested_at`` / ``.deadline``: when it was asked, when a timeout rejects
- ``tai.approval.flow_run_id`` / ``.poll_s``: the Prefect flow run paused for the answer
  and how often it looks for one (the CLI resumes that run instead of deciding itself)
- ``tai.approval.reviewer`` / ``.reason`` / ``.decided_at``: the decision

Every check runs before the first tag is written, and ``tai.approval`` is written last,
so a refused or interrupted decision leaves the version pending as it was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from infra.mlflow_store import MlflowStore, RegistryError
from tai import tags

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
NOT_REQUESTED = "none"

TAG = tags.APPROVAL
TAG_REQUESTED_AT = tags.APPROVAL_REQUESTED_AT
TAG_DEADLINE = tags.APPROVAL_DEADLINE
TAG_FLOW_RUN = tags.APPROVAL_FLOW_RUN
TAG_POLL = tags.APPROVAL_POLL
TAG_REVIEWER = tags.APPROVAL_REVIEWER
TAG_REASON = tags.APPROVAL_REASON
TAG_DECIDED_AT = tags.APPROVAL_DECIDED_AT


class ApprovalError(RegistryError):
    """An approval or rejection was refused; the message names the version and why."""


@dataclass(frozen=True)
class Approval:
    """The approval record of one model version, read from its tags."""

    version: str
    state: str  # none, pending, approved or rejected
    requested_at: str = ""
    deadline: str = ""
    flow_run_id: str = ""
    poll_s: float = 0.0
    reviewer: str = ""
    reason: str = ""
    decided_at: str = ""

    @property
    def pending(self) -> bool:
        return self.state == PENDING

    @property
    def approved(self) -> bool:
        return self.state == APPROVED

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the deadline of a pending request has passed (a timeout rejects)."""
        if not self.deadline:
            return False
        return (now or datetime.now(UTC)) > datetime.fromisoformat(self.deadline)

    def explain(self) -> str:
        """One line: the state, who decided and why."""
        if self.state in (APPROVED, REJECTED):
            why = f": {self.reason}" if self.reason else ""
            return f"version {self.version} {self.state} by {self.reviewer}{why}"
        if self.pending:
            until = f" until {self.deadline}" if self.deadline else ""
            return f"version {self.version} is pending approval{until}"
        return f"version {self.version} needs no approval (none was requested)"

    def as_dict(self) -> dict[str, str | float]:
        return asdict(self)


def approval_of(store: MlflowStore, version: str) -> Approval:
    """The approval record of a version; a version that does not exist is a RegistryError."""
    info = store.get_version(version)
    return _from_tags(info.version, info.tags)


def request_approval(
    store: MlflowStore,
    version: str,
    *,
    timeout_s: float | None = None,
    flow_run_id: str | None = None,
    poll_s: float | None = None,
    now: datetime | None = None,
) -> Approval:
    """Mark a version as waiting for a human decision.

    Args:
        store: the registry.
        version: the model version; it must have passed every gate.
        timeout_s: seconds until a timeout rejects (recorded as the deadline).
        flow_run_id: the Prefect flow run that waits for the answer, if any.
        poll_s: how often that flow run looks for an answer.
        now: the time of the request (tests pass it; default: now).

    Raises:
        RegistryError: the version does not exist.
        ApprovalError: its gates failed, or it was decided already.
    """
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    info = store.get_version(version)
    current = _from_tags(info.version, info.tags)
    if not info.gates_passed:
        raise ApprovalError(
            f"version {info.version} failed its gates, so it cannot be put up for approval "
            f"({info.tags.get(tags.GATES_REASONS, f'{tags.GATES_PASSED} is not true')})"
        )
    if current.state in (APPROVED, REJECTED):
        raise ApprovalError(
            f"version {info.version} was {current.state} already "
            f"({current.explain()}); register a new version to ask again"
        )
    now = now or datetime.now(UTC)
    updates = {TAG_REQUESTED_AT: _stamp(now)}
    if timeout_s is not None:
        updates[TAG_DEADLINE] = _stamp(now + timedelta(seconds=timeout_s))
    if flow_run_id is not None:
        updates[TAG_FLOW_RUN] = str(flow_run_id)
    if poll_s is not None:
        updates[TAG_POLL] = f"{poll_s:g}"
    for key, value in {**updates, TAG: PENDING}.items():
        store.set_version_tag(info.version, key, value)
    return approval_of(store, info.version)


def check_decision(
    approval: Approval, *, approved: bool, reviewer: str, reason: str, gates_passed: bool
) -> None:
    """Refuse a decision that cannot be recorded; changes nothing.

    Raises:
        ApprovalError: the reviewer is blank, a rejection has no reason, the version is
            not pending, or an approval is for a version whose gates failed.
    """
    v = approval.version
    if not reviewer.strip():
        raise ApprovalError(f"a decision on version {v} needs a reviewer name; pass --reviewer")
    if not approved and not reason.strip():
        raise ApprovalError(
            f"a rejection needs a reason; pass --reason to say why version {v} is rejected"
        )
    if not approval.pending:
        raise ApprovalError(
            f"version {v} is not pending approval (approval: {approval.state}); nothing changed"
        )
    if approved and not gates_passed:
        raise ApprovalError(f"version {v} failed its gates and cannot be approved; nothing changed")


def record_decision(
    store: MlflowStore,
    version: str,
    approved: bool,
    reviewer: str,
    reason: str = "",
    *,
    now: datetime | None = None,
) -> Approval:
    """Record a reviewer's decision on a pending version; the champion alias is not moved.

    Raises:
        RegistryError: the version does not exist.
        ApprovalError: see :func:`check_decision`; the registry is left unchanged.
    """
    info = store.get_version(version)
    current = _from_tags(info.version, info.tags)
    check_decision(
        current,
        approved=approved,
        reviewer=reviewer,
        reason=reason,
        gates_passed=info.gates_passed,
    )
    tags = {
        TAG_REVIEWER: reviewer.strip(),
        TAG_REASON: reason.strip(),
        TAG_DECIDED_AT: _stamp(now or datetime.now(UTC)),
        TAG: APPROVED if approved else REJECTED,  # last: the state tag commits the decision
    }
    for key, value in tags.items():
        store.set_version_tag(info.version, key, value)
    return approval_of(store, info.version)


def promote_if_approved(store: MlflowStore, version: str) -> bool:
    """Make an approved version that passed its gates ``champion``; True if it is champion."""
    info = store.get_version(version)
    if not (info.gates_passed and _from_tags(info.version, info.tags).approved):
        return False
    store.set_champion(info.version)  # idempotent: the alias may point here already
    return True


def _from_tags(version: str, tags: dict[str, str]) -> Approval:
    poll = tags.get(TAG_POLL, "")
    return Approval(
        version=version,
        state=tags.get(TAG, NOT_REQUESTED),
        requested_at=tags.get(TAG_REQUESTED_AT, ""),
        deadline=tags.get(TAG_DEADLINE, ""),
        flow_run_id=tags.get(TAG_FLOW_RUN, ""),
        poll_s=float(poll) if poll else 0.0,
        reviewer=tags.get(TAG_REVIEWER, ""),
        reason=tags.get(TAG_REASON, ""),
        decided_at=tags.get(TAG_DECIDED_AT, ""),
    )


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
