"""`tai approve` and `tai reject`: a reviewer's decision on a model version awaiting approval.

If the pipeline's flow run is paused for the version, it is resumed with the answer and
records the decision and moves ``champion`` itself; otherwise (no flow run waits, e.g.
its process is gone) the decision is recorded here and an approval moves ``champion``.
Registered on the `tai` app in ``flows/cli/__init__.py``.
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from flows.cli.common import cli_errors, settings


@cli_errors
def approve(
    version: Annotated[str, typer.Argument(help="The model version awaiting approval.")],
    reviewer: Annotated[
        str, typer.Option(help="Who approves; recorded on the version (default: your login).")
    ] = "",
    reason: Annotated[str, typer.Option(help="Why; recorded on the version.")] = "",
) -> None:
    """Approve a model version awaiting approval: it becomes `champion`."""
    typer.echo(_decide(version, approve=True, reviewer=reviewer or _login(), reason=reason))


@cli_errors
def reject(
    version: Annotated[str, typer.Argument(help="The model version awaiting approval.")],
    reason: Annotated[str, typer.Option(help="Why (required); recorded on the version.")] = "",
    reviewer: Annotated[
        str, typer.Option(help="Who rejects; recorded on the version (default: your login).")
    ] = "",
) -> None:
    """Reject a model version awaiting approval: `champion` stays where it is."""
    typer.echo(_decide(version, approve=False, reviewer=reviewer or _login(), reason=reason))


def _decide(version: str, *, approve: bool, reviewer: str, reason: str) -> str:
    current = settings()  # before Prefect is imported: it reads its home at import
    from flows.tasks.approval import decide
    from infra.mlflow_store import MlflowStore

    outcome = decide(
        MlflowStore(current), version, approve=approve, reviewer=reviewer, reason=reason
    )
    return outcome.describe()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return ""
