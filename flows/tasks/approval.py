"""Human approval of a promotion: pause the flow run for a typed answer, or decide from outside.

Inside the pipeline, :func:`await_approval` marks the version pending in the registry and
pauses the flow run with Prefect's ``pause_flow_run(wait_for_input=ApprovalInput)``; the
process keeps running and polls the Prefect API until the run is resumed with an answer
(from ``tai approve``/``tai reject`` or the Prefect UI's form) or the timeout passes,
which rejects. ``pause`` rather than ``suspend``: a suspended run exits and is run again
from its deployment, which a plain ``tai run`` does not have.

Outside, :func:`decide` is what the CLI runs: if the flow run named on the version is
paused it is resumed with the answer and records it itself; if no flow run waits (its
process is gone) the decision is recorded in the registry directly and an approval
moves ``champion``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import httpx
from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.states import Running
from pydantic import Field, ValidationError, model_validator

from infra.approvals import (
    Approval,
    ApprovalError,
    approval_of,
    check_decision,
    promote_if_approved,
    record_decision,
    request_approval,
)
from infra.mlflow_store import MlflowStore

# The reviewer recorded when no human answered.
TIMEOUT_REVIEWER = "tai (timeout)"


class ApprovalInput(RunInput):
    """A reviewer's answer to a paused promotion (also the Prefect UI's resume form)."""

    approve: bool = Field(description="true promotes the version, false rejects it")
    reviewer: str = Field(min_length=1, description="who decides (recorded on the version)")
    reason: str = Field(default="", description="why; required for a rejection")

    @model_validator(mode="after")
    def _a_decision_is_complete(self) -> ApprovalInput:
        if not self.reviewer.strip():
            raise ValueError("reviewer must not be blank")
        if not self.approve and not self.reason.strip():
            raise ValueError("a rejection needs a reason")
        return self


def pause_key(version: str) -> str:
    """The pause key of a version: one approval pause per version and flow run."""
    return f"tai-approval-v{version}"


def await_approval(
    store: MlflowStore, version: str, *, timeout_s: int, poll_interval_s: float | None = None
) -> Approval:
    """Pause the current flow run until a reviewer approves or rejects ``version``.

    Call it from the promotion step (a flow or a task inside one) after every gate
    passed. It does not move ``champion``: the caller promotes when the returned
    approval is approved (:func:`infra.approvals.promote_if_approved`).

    Args:
        store: the registry holding the version.
        version: the model version to decide on.
        timeout_s: seconds to wait; then the version is rejected.
        poll_interval_s: how often the paused run asks Prefect whether it was resumed;
            by default every 10 s, or a quarter of a shorter timeout (a 3 s timeout polled
            every 10 s would wait 10 s).

    Returns:
        The recorded approval: approved, or rejected by the reviewer, by an invalid
        answer or by the timeout.

    Raises:
        ApprovalError: not inside a flow run, or the version cannot be put up for approval.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    if poll_interval_s is None:
        poll_interval_s = min(10.0, max(0.5, timeout_s / 4))
    if not poll_interval_s > 0:
        raise ValueError(f"poll_interval_s must be > 0 seconds, got {poll_interval_s!r}")
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise ApprovalError(
            f"approval of version {version} must be awaited inside a Prefect flow run; "
            "outside one, use `tai approve`/`tai reject`"
        )
    log = get_run_logger()
    flow_run_id = context.flow_run.id
    request_approval(
        store, version, timeout_s=timeout_s, flow_run_id=str(flow_run_id), poll_s=poll_interval_s
    )
    log.info(
        "version %s waits for approval (up to %s s): `tai approve %s --reviewer NAME` "
        "or `tai reject %s --reason TEXT`",
        version,
        timeout_s,
        version,
        version,
    )
    try:
        answer = pause_flow_run(
            wait_for_input=ApprovalInput,
            timeout=timeout_s,
            poll_interval=poll_interval_s,
            key=pause_key(version),
        )
    except FlowPauseTimeout:
        _running_again(flow_run_id, f"no approval of version {version} within {timeout_s} s")
        reason = f"no decision within {timeout_s} s (timeout rejects)"
        return _record_once(store, version, False, TIMEOUT_REVIEWER, reason)
    except ValidationError as exc:
        # Only the Prefect UI's form can send this (the CLI validates first); an answer
        # that is not a valid decision must not promote, so it rejects.
        problem = exc.errors()[0]["msg"]
        reason = f"invalid answer from the Prefect UI ({problem}); an invalid answer rejects"
        return _record_once(store, version, False, "unknown (invalid answer)", reason)
    return _record_once(store, version, answer.approve, answer.reviewer, answer.reason)


def _record_once(
    store: MlflowStore, version: str, approved: bool, reviewer: str, reason: str
) -> Approval:
    """Record the decision, unless `tai approve`/`reject` recorded one already."""
    current = approval_of(store, version)
    if not current.pending:
        get_run_logger().warning("kept the decision recorded meanwhile: %s", current.explain())
        return current
    approval = record_decision(store, version, approved, reviewer, reason)
    get_run_logger().info("%s", approval.explain())
    return approval


def _running_again(flow_run_id: UUID, message: str) -> None:
    """Set a flow run whose pause timed out back to Running, so the pipeline can finish.

    Prefect leaves an in-process pause that timed out in Paused (PrefectHQ/prefect#11414),
    and its orchestration then fails the run's next state change. The timeout is an
    expected outcome here (it rejects the version), so the state is forced.
    """
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Running(message=message), force=True)


# -- deciding from outside the flow run (the CLI) ------------------------------------------
@dataclass(frozen=True)
class ApprovalOutcome:
    """What `tai approve`/`tai reject` did; :meth:`describe` is the line the CLI prints."""

    approval: Approval
    champion_version: str | None
    flow_run_id: str | None  # the flow run that recorded the decision, if one did
    note: str = ""

    def describe(self) -> str:
        a = self.approval
        by = f"reviewer {a.reviewer}" + (f": {a.reason}" if a.reason else "")
        if a.approved:
            where = (
                f"`champion` is version {a.version}"
                if self.champion_version == a.version
                else "`champion` has not moved yet"
            )
        else:
            where = (
                f"`champion` stays at version {self.champion_version}"
                if self.champion_version
                else "there is no `champion`"
            )
        if self.flow_run_id:
            how = f"resumed flow run {self.flow_run_id}, which recorded it"
        else:
            how = f"recorded in the registry ({self.note or 'no flow run was waiting'})"
        return f"{a.state} version {a.version} ({by}); {how}; {where}"


def decide(
    store: MlflowStore,
    version: str,
    *,
    approve: bool,
    reviewer: str,
    reason: str = "",
    answer_timeout_s: float | None = None,
) -> ApprovalOutcome:
    """Approve or reject a pending version, through the flow run that waits for it if any.

    Args:
        store: the registry.
        version: the pending model version.
        approve: True approves (and makes it ``champion``), False rejects.
        reviewer: who decides.
        reason: why; required for a rejection.
        answer_timeout_s: how long to wait for a resumed flow run to record the decision
            before recording it here (default: two of its poll intervals plus 10 s).

    Raises:
        RegistryError: the version does not exist.
        ApprovalError: the decision cannot be made (see
            :func:`infra.approvals.check_decision`), or the request expired; nothing changed.
    """
    info = store.get_version(version)
    current = approval_of(store, info.version)
    check_decision(
        current, approved=approve, reviewer=reviewer, reason=reason, gates_passed=info.gates_passed
    )
    answer = ApprovalInput(approve=approve, reviewer=reviewer.strip(), reason=reason.strip())
    wait_s = answer_timeout_s if answer_timeout_s is not None else 2 * current.poll_s + 10
    v = current.version
    flow_run_id = _waiting_flow_run(current, wait_s)
    if flow_run_id is None and approve and current.expired():
        raise ApprovalError(
            f"the approval request for version {v} expired at {current.deadline} (a timeout "
            "rejects); nothing changed; run the pipeline again to ask for a new approval"
        )
    note = ""
    if flow_run_id is not None:
        resumed = _resume(flow_run_id, answer, v)
        if resumed and _wait_for(lambda: not approval_of(store, v).pending, wait_s):
            recorded = approval_of(store, v)
            if recorded.approved != approve:
                raise ApprovalError(f"version {v} was decided meanwhile ({recorded.explain()})")
            if approve:  # the flow run moves the alias right after recording the approval
                _wait_for(lambda: _champion(store) == v, wait_s)
            return ApprovalOutcome(recorded, _champion(store), str(flow_run_id))
        latest = approval_of(store, v)
        if not latest.pending:
            raise ApprovalError(
                f"version {v} was decided meanwhile ({latest.explain()}); nothing changed"
            )
        if resumed:
            note = (
                f"flow run {flow_run_id} did not answer within {wait_s:g} s, so its process "
                "is likely gone"
            )
    approval = record_decision(store, current.version, approve, answer.reviewer, answer.reason)
    promote_if_approved(store, current.version)
    return ApprovalOutcome(approval, _champion(store), None, note)


def _resume(flow_run_id: UUID, answer: ApprovalInput, version: str) -> bool:
    """Resume the paused run with the answer; False if it is no longer paused."""
    try:
        resume_flow_run(flow_run_id, run_input=answer.model_dump())
    except FlowPauseTimeout:
        raise ApprovalError(
            f"the approval request for version {version} timed out (flow run {flow_run_id}); "
            "a timeout rejects, so nothing changed"
        ) from None
    except NotPausedError:
        return False  # answered or timed out meanwhile; the registry tells which
    except RuntimeError as exc:  # the API refused the answer, e.g. another input schema
        raise ApprovalError(
            f"flow run {flow_run_id} refused the answer for version {version}: {exc}; "
            "nothing changed"
        ) from None
    return True


def _waiting_flow_run(approval: Approval, wait_s: float) -> UUID | None:
    """The flow run paused for this version's approval, or None if none waits.

    The version is marked pending just before its flow run pauses, so a run still
    Running is given ``wait_s`` to reach Paused; a finished or unknown run waits for
    nothing (e.g. its process died, or this is another Prefect API).
    """
    try:
        flow_run_id = UUID(approval.flow_run_id)
    except ValueError:
        return None  # no flow run was named (or the tag is not a flow run id)
    with get_client(sync_client=True) as client:

        def state():
            try:
                return client.read_flow_run(flow_run_id).state
            except ObjectNotFound:
                return None
            except httpx.HTTPError as exc:
                # Deciding here could leave a live flow run waiting for nothing: refuse.
                raise ApprovalError(
                    f"cannot ask the Prefect API at {client.api_url} whether flow run "
                    f"{flow_run_id} waits for version {approval.version} ({exc}); "
                    "nothing changed"
                ) from None

        deadline = time.monotonic() + wait_s
        while True:
            current = state()
            if current is None or current.is_final():
                return None
            if current.is_paused():
                return flow_run_id
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)


def _wait_for(condition: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)
    return True


def _champion(store: MlflowStore) -> str | None:
    champion = store.champion()
    return champion.version if champion else None
