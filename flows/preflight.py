"""Checks of a run's inputs that need neither Prefect nor torch: they fail in a second."""

from __future__ import annotations

from flows.stores import make_data_store
from infra.datastore.base import DataVersion
from infra.settings import Settings, SettingsError
from tai.policy import GatePolicy, PolicyError, load_policy


def check_inputs(settings: Settings, ref: str) -> tuple[GatePolicy, DataVersion]:
    """Load the gate policy and resolve the data ref to a commit.

    Raises:
        PolicyError: the policy file is missing or malformed.
        DataStoreError: the branch or commit does not exist.
    """
    return load_gate_policy(settings), make_data_store(settings).version(ref)


def load_gate_policy(settings: Settings) -> GatePolicy:
    """The gate policy, checked against what this configuration's evaluation reports.

    Raises:
        PolicyError: the file is missing or malformed, names an unknown metric, asks a
            confidence bound or a champion comparison the evaluation cannot compute.
    """
    from tai.gate_evidence import BOUNDED_METRICS, COMPARABLE_METRICS

    policy = load_policy(settings.policy_file, gate_metric_names(settings))
    unbounded = [m for m in policy.bound_metrics() if m not in BOUNDED_METRICS]
    if unbounded:
        raise PolicyError(
            f"{policy.source}: no confidence bound is computed for "
            f"{', '.join(map(repr, unbounded))}; `use: lower|upper` works with "
            f"{', '.join(BOUNDED_METRICS)} (or judge the point value: `use: point`)"
        )
    incomparable = [m for m in policy.comparison_metrics() if m not in COMPARABLE_METRICS]
    if incomparable:
        raise PolicyError(
            f"{policy.source}: the champion section cannot compare "
            f"{', '.join(map(repr, incomparable))}; paired comparisons exist for "
            f"{', '.join(COMPARABLE_METRICS)}"
        )
    return policy


def check_corruptions(settings: Settings) -> list[str]:
    """Load the corruption plugins and check that every configured corruption exists.

    Raises:
        SettingsError: a plugin does not load, or a corruption name is unknown.
    """
    from tai.corruptions import available_corruptions, load_corruption_plugins

    try:
        load_corruption_plugins(settings.corruption_plugins)
    except ValueError as exc:
        raise SettingsError(f"TAI_CORRUPTION_PLUGINS: {exc}") from None
    known = available_corruptions()
    unknown = [c for c in settings.corruptions if c not in known]
    if unknown:
        raise SettingsError(
            f"TAI_CORRUPTIONS: unknown corruption {', '.join(map(repr, unknown))}; "
            f"available: {', '.join(known)} (or register your own with TAI_CORRUPTION_PLUGINS)"
        )
    return list(settings.corruptions)


def gate_metric_names(settings: Settings | None = None) -> list[str]:
    """Every metric a gate may name: the TAI report's and the data card's (with the
    default corruptions when no settings are given)."""
    from tai.corruptions import DEFAULT_CORRUPTIONS
    from tai.data_card import DATA_METRIC_NAMES
    from tai.data_drift import DRIFT_METRIC_NAMES
    from tai.evaluation import report_metric_names

    corruptions = check_corruptions(settings) if settings else DEFAULT_CORRUPTIONS
    return [
        *report_metric_names(corruptions),
        *DATA_METRIC_NAMES,
        *DRIFT_METRIC_NAMES,
    ]
