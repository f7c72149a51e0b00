"""Checks of a run's inputs that need neither Prefect nor torch: they fail in a second."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.stores import make_data_store
from infra.datastore.base import DataVersion
from infra.settings import Settings, SettingsError
from tai.gates.policy import GatePolicy, load_policy

if TYPE_CHECKING:
    from tai.evaluation.registry import CheckOptions


def check_inputs(settings: Settings, ref: str) -> tuple[GatePolicy, DataVersion]:
    """Load the gate policy and resolve the data ref to a commit.

    Raises:
        PolicyError: the policy file is missing or malformed.
        DataStoreError: the branch or commit does not exist.
    """
    return load_gate_policy(settings), make_data_store(settings).version(ref)


def load_gate_policy(settings: Settings) -> GatePolicy:
    """The gate policy, checked against the metrics this configuration's checks declare.

    Raises:
        PolicyError: the file is missing or malformed, names an unknown metric, asks a
            confidence bound or a champion comparison the checks do not compute.
    """
    from tai.check import Stage
    from tai.evaluation.registry import GATED_STAGES, metric_specs

    options = check_options(settings)
    return load_policy(
        settings.policy_file,
        metric_specs(options, stages=GATED_STAGES),
        monitoring_specs=metric_specs(options, stages=(Stage.MONITORING,)),
    )


def check_options(settings: Settings) -> CheckOptions:
    """The evaluation's budgets and switches, from the settings.

    Raises:
        SettingsError: a corruption plugin does not load or a corruption is unknown.
    """
    from tai.evaluation.registry import CheckOptions

    budget = settings.tai_budget
    return CheckOptions(
        corruptions=tuple(check_corruptions(settings)),
        corruption_budget=max(budget, 8),
        # The explanation-quality sample: 64 images at the default budget of 512 (95% half-
        # width about 0.056 on the MNIST sample's deletion AUC; see ExplanationCheck).
        explanation_budget=max(budget // 8, 16),
        epsilons=tuple(settings.adversarial_epsilons),
        pgd_steps=settings.pgd_steps,
        adversarial_budget=max(budget // 2, 8),
        certify=settings.certify,
        certify_sigma=settings.certify_sigma,
        certify_n0=settings.certify_n0,
        certify_n=settings.certify_n,
        certify_budget=settings.certify_budget,
        membership_budget=max(budget, 8),
    )


def check_corruptions(settings: Settings) -> list[str]:
    """Load the corruption plugins and check that every configured corruption exists.

    Raises:
        SettingsError: a plugin does not load, or a corruption name is unknown.
    """
    from tai.principles.reliability.corruptions import (
        available_corruptions,
        load_corruption_plugins,
    )

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
