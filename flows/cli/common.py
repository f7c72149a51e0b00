"""What every `tai` command shares: the settings the entry point applied, quiet logs,
and one line on stderr with exit code 1 for every expected error."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator

import typer

from infra.settings import (
    Settings,
    SettingsError,
    apply_environment,
    load_settings,
    unknown_variables,
)

_state: dict[str, bool] = {"verbose": False}
# Loggers that would drown the one-line messages without --verbose.
_QUIET = (
    "pytorch_lightning",
    "lightning.pytorch",
    "lightning_fabric",
    "mlflow",
    "torch._export",
    "torch.export",
    "alembic",
)


def expected_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can meet and fix: each becomes one line and exit code 1."""
    from flows.tasks.monitoring import MonitoringError
    from infra.datastore.base import DataStoreError
    from infra.events import EventError
    from infra.mlflow_store import RegistryError
    from tai.data.profile import DatasetError
    from tai.gates.policy import PolicyError
    from tai.gates.requirements import RequirementsError
    from tai.modeling.pretrained import PretrainedWeightsError

    return (
        MonitoringError,
        DataStoreError,
        DatasetError,
        PolicyError,
        RequirementsError,
        SettingsError,
        RegistryError,
        EventError,
        PretrainedWeightsError,
    )


def configure(verbose: bool) -> None:
    """Called once by the entry point, before any command imports Prefect or MLflow:
    remember ``--verbose`` and quieten the libraries' logs unless it was given.

    Settings are loaded and applied by :func:`settings` inside the command's error
    handling, so a bad settings file is a one-line error too.
    """
    _state["verbose"] = verbose
    # Prefect reads its log level once, at import: set it before anything imports it.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "CRITICAL")
    if not verbose:
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        warnings.filterwarnings("ignore", module="lightning_fabric")


def settings() -> Settings:
    """The settings of this invocation, loaded and applied: Prefect and MLflow pointed at
    the workspace. Each command calls it first, before it imports either."""
    loaded = load_settings()
    for problem in unknown_variables():
        typer.echo(f"warning: {problem}", err=True)
    apply_environment(loaded)
    return loaded


@contextlib.contextmanager
def stdout_kept_clean() -> Iterator[None]:
    """Send what anything writes to the process's stdout (file descriptor 1) to stderr
    meanwhile: libraries with native code (Oxen prints its progress from Rust) must not
    mix their lines into output a program parses, such as ``--json``."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def fail(message: str) -> None:
    """One line on stderr and exit code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def cli_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn the expected errors of a command into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        # Without --verbose, the one-line error below is all a user should see: Prefect
        # re-configures its loggers when its server starts, so levels alone don't hold.
        if not _state["verbose"]:
            logging.disable(logging.ERROR)
        try:
            command(*args, **kwargs)
        except expected_errors() as exc:
            fail(str(exc))
        finally:
            logging.disable(logging.NOTSET)

    return wrapper
