"""Checks of a run's inputs that need neither Prefect nor torch: they fail in a second."""

from __future__ import annotations

from flows.stores import make_data_store
from infra.datastore.base import DataVersion
from infra.settings import Settings
from tai.policy import GatePolicy, load_policy


def check_inputs(settings: Settings, ref: str) -> tuple[GatePolicy, DataVersion]:
    """Load the gate policy and resolve the data ref to a commit.

    Raises:
        PolicyError: the policy file is missing or malformed.
        DataStoreError: the branch or commit does not exist.
    """
    from tai.evaluation import report_metric_names

    policy = load_policy(settings.policy_file, report_metric_names())
    return policy, make_data_store(settings).version(ref)
