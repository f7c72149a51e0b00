"""`tai monitor` and `tai trends`: the deployed model on production batches, over time."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import cli_errors, fail, stdout_kept_clean
from flows.cli.common import settings as current_settings

app = typer.Typer()


@app.command()
@cli_errors
def monitor(
    folder: Annotated[
        Path | None, typer.Argument(help="Folder of the batch's images (any nesting).")
    ] = None,
    ref: Annotated[
        str | None, typer.Option(help="A data branch or commit holding the batch instead.")
    ] = None,
    prefix: Annotated[str, typer.Option(help="The batch's path in --ref.")] = "",
    model_version: Annotated[
        str | None, typer.Option(help="Model version to monitor (default: champion).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
) -> None:
    """Estimate the deployed model's accuracy, deferral and drift on unlabeled images;
    alarm at the policy's monitoring rules and put images to label on a review branch."""
    settings = current_settings()
    if (folder is None) == (ref is None):
        fail("give a FOLDER of images, or --ref REF --prefix PATH of the data store")
    if ref is not None and not prefix:
        fail("--ref needs --prefix: the path of the batch in that branch or commit")
    from flows import prefect_server

    prefect_server.start_early()  # beside the imports below
    from flows.monitor import describe, tai_monitor
    from flows.progress import for_terminal, showing

    prefect_server.wait_until_started()

    with showing(for_terminal()), stdout_kept_clean() if as_json else nullcontext():
        result = tai_monitor(
            folder=str(folder) if folder is not None else None,
            ref=ref,
            prefix=prefix,
            model_version=model_version,
            settings=settings,
        )
    typer.echo(json.dumps(result.as_json()) if as_json else describe(result))


@app.command()
@cli_errors
def trends(
    output: Annotated[
        Path | None, typer.Option(help="Where to write the page (default: the reports folder).")
    ] = None,
) -> None:
    """Write one HTML page: every gated metric across model versions, with its gate, and
    every monitoring estimate across production batches."""
    settings = current_settings()
    from flows.trends import write_trends

    path = write_trends(settings, output)
    typer.echo(path)
