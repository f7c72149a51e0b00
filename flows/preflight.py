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
    policy = load_policy(settings.policy_file, gate_metric_names())
    return policy, make_data_store(settings).version(ref)


def gate_metric_names() -> list[str]:
    """Every metric a gate may name: the TAI report's and the data card's."""
    from tai.data_card import DATA_METRIC_NAMES
    from tai.evaluation import report_metric_names

    return [*report_metric_names(), *DATA_METRIC_NAMES]
