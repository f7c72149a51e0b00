"""The `tai` command line: data versioning, pipeline runs, reports and the demo.

Settings come from ``TAI_*`` environment variables or ``tai.yaml`` (see the README). The
entry point configures logging before any command runs, and each command applies the
settings (pointing Prefect and MLflow at the workspace) before it imports either. Every
expected failure (a missing branch, a corrupt image, a bad policy) ends with one line on
stderr that says what is wrong and what to do, and exit code 1.
"""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli import approval, data, monitor, pipeline, requirements
from flows.cli.common import configure

app = typer.Typer(
    help="TAI-MLOps: train, check, gate and register image classifiers on versioned data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.registered_commands += requirements.app.registered_commands
app.registered_commands += pipeline.app.registered_commands
app.registered_commands += monitor.app.registered_commands
# Human oversight: a reviewer's decision on a version awaiting approval.
app.command("approve")(approval.approve)
app.command("reject")(approval.reject)
app.add_typer(data.app, name="data")


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Prefect and Lightning logs.")
    ] = False,
) -> None:
    configure(verbose)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
