"""Checks of a run's inputs before anything is trained: they fail in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flows.stores import make_data_store
from infra.datastore.base import DataVersion
from infra.settings import Settings, SettingsError
from tai.gates.policy import GatePolicy, load_policy

if TYPE_CHECKING:
    from tai.evaluation.registry import CheckOptions
    from tai.gates.requirements import Requirements


@dataclass(frozen=True)
class RunInputs:
    """What a run is judged by, checked before anything is trained: the requirements
    (None without a requirements file), the gate policy, and the checks' options."""

    policy: GatePolicy
    requirements: Requirements | None
    options: CheckOptions


def check_inputs(settings: Settings, ref: str) -> tuple[RunInputs, DataVersion]:
    """Load the requirements, the policy and the checks' options, and resolve the data
    ref to a commit.

    Raises:
        RequirementsError: the requirements file is malformed or contradicts itself.
        PolicyError: the policy file is missing, malformed, or looser than the
            requirements demand.
        SettingsError: a corruption plugin does not load or a corruption is unknown; the
            model is unknown, its factory does not import, or its pretrained weights are
            not on this machine.
        DataStoreError: the branch or commit does not exist.
        ServerUnreachable: the MLflow tracking server or the Prefect API does not answer.
    """
    check_servers(settings)
    return load_run_inputs(settings), make_data_store(settings).version(ref)


class ServerUnreachable(SettingsError):
    """A server the run needs does not answer its health check."""


SERVER_TIMEOUT_S = 5.0


def check_servers(settings: Settings, timeout: float = SERVER_TIMEOUT_S) -> None:
    """GET the health endpoint of the MLflow tracking server (when the tracking URI is
    http(s)) and of the Prefect API (when ``PREFECT_API_URL`` is set), so a run whose
    servers are down stops in one line before anything trains, instead of a traceback
    after the clients' retries (RELIABILITY.md, BUG-7).

    Raises:
        ServerUnreachable: naming the server, its URL, why, and how to start it.
    """
    import os
    import urllib.error
    import urllib.request

    servers = []
    if settings.tracking_uri.startswith(("http://", "https://")):
        servers.append(
            (
                "MLflow tracking server",
                settings.tracking_uri.rstrip("/") + "/health",
                "start it (`mlflow server ...`, or `python -m infra.stack up`) or point "
                "TAI_MLFLOW_TRACKING_URI at a running one",
            )
        )
    prefect_api = os.environ.get("PREFECT_API_URL", "")
    if prefect_api:
        servers.append(
            (
                "Prefect API",
                prefect_api.rstrip("/") + "/health",
                "start it (`prefect server start`, or `python -m infra.stack up`) or unset "
                "PREFECT_API_URL to run on a temporary local server",
            )
        )
    for name, url, remedy in servers:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                if response.status == 200:
                    continue
                why = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            why = str(getattr(exc, "reason", exc))
        raise ServerUnreachable(f"the {name} at {url} does not answer ({why}); {remedy}")


def load_run_inputs(settings: Settings) -> RunInputs:
    """The requirements, the policy checked against the metrics this configuration's
    checks declare (and against the requirements), and the checks' options.

    The requirements' expected perturbations become the corruption list unless
    ``TAI_CORRUPTIONS`` is set, which must then hold them; their group column becomes
    ``TAI_GROUP_COLUMN`` unless that is set to the same column.

    Raises:
        RequirementsError, PolicyError, SettingsError: see :func:`check_inputs`.
    """
    from tai.check import Stage
    from tai.evaluation.registry import GATED_STAGES, metric_specs
    from tai.gates.derivation import assert_policy_meets

    check_model(settings)
    requirements = load_requirements_file(settings)
    options = check_options(settings, requirements)
    policy = load_policy(
        settings.policy_file,
        metric_specs(options, stages=GATED_STAGES),
        monitoring_specs=metric_specs(options, stages=(Stage.MONITORING,)),
    )
    if requirements is not None:
        assert_policy_meets(requirements, policy, metric_specs(options))
    return RunInputs(policy, requirements, options)


def load_requirements_file(settings: Settings) -> Requirements | None:
    """The requirements file of the settings; None when the default file does not exist
    (a file named by ``TAI_REQUIREMENTS_FILE`` must exist)."""
    from tai.gates.requirements import load_requirements

    path = settings.requirements_file
    if str(path) in ("", "."):  # TAI_REQUIREMENTS_FILE="": the policy alone decides
        return None
    if not path.is_file() and "requirements_file" not in settings.model_fields_set:
        return None
    check_corruptions(settings)  # the plugins' corruptions are valid perturbations too
    return load_requirements(path)


def run_settings(settings: Settings, requirements: Requirements | None) -> Settings:
    """The settings a run uses: the requirements' group column fills an unset
    ``TAI_GROUP_COLUMN`` (one that names another column is an error).

    Raises:
        SettingsError: ``TAI_GROUP_COLUMN`` names another column than the requirements.
    """
    column = requirements.group_column if requirements else None
    if not column or settings.group_column == column:
        return settings
    if settings.group_column:
        raise SettingsError(
            f"TAI_GROUP_COLUMN={settings.group_column!r} but the requirements protect the "
            f"groups of column {column!r} ({requirements.source}); set TAI_GROUP_COLUMN="
            f"{column} or change protected_groups.column"
        )
    return settings.model_copy(update={"group_column": column})


def check_options(settings: Settings, requirements: Requirements | None = None) -> CheckOptions:
    """The evaluation's budgets and switches, from the settings (and the requirements'
    expected perturbations, see :func:`load_run_inputs`).

    Raises:
        SettingsError: a corruption plugin does not load or a corruption is unknown.
        RequirementsError: ``TAI_CORRUPTIONS`` lacks a perturbation the requirements expect.
    """
    from tai.evaluation.registry import CheckOptions
    from tai.gates.requirements import check_corruption_list

    corruptions = check_corruptions(settings)
    if requirements is not None:
        if "corruptions" in settings.model_fields_set:
            check_corruption_list(requirements, corruptions)
        else:
            corruptions = list(requirements.corruptions)
    budget = settings.tai_budget
    return CheckOptions(
        corruptions=tuple(corruptions),
        corruption_budget=max(budget, 8),
        # The explanation-quality sample: 64 images at the default budget of 512 (95% half-
        # width about 0.056 on the MNIST sample's deletion AUC; see ExplanationCheck).
        explanation_budget=max(budget // 8, 16),
        # Of those, re-explained by max-sensitivity and the randomisation check (4 perturbed
        # copies, a randomised model, every method): 32 at 512, where they were three
        # quarters of the check's time with all 64 (the demo's evaluation, 2026-12-04);
        # standard errors at 32: max-sensitivity's mean 0.017, the sanity correlations'
        # at most 0.065 against their pass line at 0.5 (see ExplanationCheck).
        explanation_reexplain_budget=max(budget // 16, 8),
        epsilons=tuple(settings.adversarial_epsilons),
        pgd_steps=settings.pgd_steps,
        adversarial_budget=max(budget // 2, 8),
        certify=settings.certify,
        certify_sigma=settings.certify_sigma,
        certify_n0=settings.certify_n0,
        certify_n=settings.certify_n,
        certify_budget=settings.certify_budget,
        membership_budget=max(budget, 8),
        # Every check runs the model on at most a training batch at once, so its memory
        # follows TAI_BATCH_SIZE, not its budget or the data set.
        batch_size=settings.batch_size,
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


def check_model(settings: Settings) -> None:
    """The model exists (the project's, torchvision's, or a factory that imports) and its
    pretrained weights are on this machine (nothing is downloaded); the sizes are checked
    once the data's are known, when the model is built.

    Raises:
        SettingsError: one line naming the setting and what to do.
    """
    from tai.modeling.models import model_kind
    from tai.modeling.pretrained import resolve_pretrained
    from tai.modeling.user_models import resolve_factory

    try:
        kind = model_kind(settings.model)
        if kind in ("factory", "entry_point"):
            resolve_factory(settings.model)
    except (ValueError, LookupError) as exc:
        raise SettingsError(f"TAI_MODEL: {exc}") from None
    if settings.pretrained:
        try:
            resolve_pretrained(
                settings.pretrained,
                model_name=settings.model,
                torchvision_arch=kind == "torchvision",
            )
        except ValueError as exc:
            raise SettingsError(f"TAI_PRETRAINED: {exc}") from None
