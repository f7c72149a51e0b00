"""The keys of the tags every MLflow run and model version carries: one place for all.

Lineage (data version, code version, policy), the gate decision, the evidence (report,
digests, the deferral threshold), the human approval and, for monitoring runs, the
batch. Code that reads or writes a tag imports its key from here, so a rename is one edit
and cannot silently turn a feature off (the drift gates find their baseline by
:data:`DATA_COMMIT`, for instance).
"""

from __future__ import annotations

# data lineage (infra.datastore.base.DataVersion.as_tags)
DATA_STORE = "tai.data.store"
DATA_REPOSITORY = "tai.data.repository"
DATA_COMMIT = "tai.data.commit"
DATA_BRANCH = "tai.data.branch"  # resource label of the tai.data.merged event
# code and policy lineage
CODE_VERSION = "tai.code.version"
POLICY_SHA256 = "tai.policy.sha256"
POLICY_SOURCE = "tai.policy.source"
REQUIREMENTS_SHA256 = "tai.requirements.sha256"
SETTINGS_SHA256 = "tai.settings.sha256"  # the settings that shape the model
# the model's architecture and the pretrained weights it started from
MODEL_ARCHITECTURE = "tai.model.architecture"
PRETRAINED = "tai.model.pretrained"
PRETRAINED_SHA256 = "tai.model.pretrained_sha256"
# the gate decision
GATES_PASSED = "tai.gates.passed"
GATES_REASONS = "tai.gates.reasons"
GATE_PREFIX = "tai.gate."  # one tag per gate: tai.gate.<gate key>
# evidence
REPORT = "tai.report"
WEIGHTS_SHA256 = "tai.weights_sha256"
MODEL_SHA256 = "tai.model_sha256"
DEFER_THRESHOLD = "tai.defer_threshold"
PROMOTION = "tai.promotion"  # why a version that passed was not promoted
ATC_THRESHOLD = "tai.atc_threshold"  # monitoring: ATC's confidence threshold on validation
# registration (flows.tasks.promotion): a version is created `pending` and tagged `complete`
# as the last step of its registration; a pending version is not listed, never champion, never
# reused, and the next pipeline run deletes it (or completes it if a person decided on it).
# A version without the tag was registered before it existed and counts as complete.
REGISTRATION = "tai.registration"
REGISTRATION_PENDING = "pending"
REGISTRATION_COMPLETE = "complete"
# on an MLflow run: the Prefect flow run that created it, so that a later run can mark it
# FAILED when that flow run ended without doing so (the tracking server was down then)
FLOW_RUN = "tai.flow_run_id"
# human approval (infra.approvals)
APPROVAL = "tai.approval"
APPROVAL_REQUESTED_AT = "tai.approval.requested_at"
APPROVAL_DEADLINE = "tai.approval.deadline"
APPROVAL_FLOW_RUN = "tai.approval.flow_run_id"
APPROVAL_POLL = "tai.approval.poll_s"
APPROVAL_REVIEWER = "tai.approval.reviewer"
APPROVAL_REASON = "tai.approval.reason"
APPROVAL_DECIDED_AT = "tai.approval.decided_at"
# monitoring runs
MODEL_VERSION = "tai.model.version"
BATCH_ID = "tai.batch.id"
BATCH_PREFIX = "tai.batch.prefix"  # where a batch lies in its data ref
# on a model version: the monitoring rules its last batch failed (an alarm episode)
MONITOR_ALARM = "tai.monitor.alarm"


def gate_tag(key: str) -> str:
    """The tag of one gate's explanation, e.g. ``tai.gate.ece.upper``."""
    return f"{GATE_PREFIX}{key}"
