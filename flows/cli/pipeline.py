"""`tai run`, `tai demo`, `tai models`, `tai report`, `tai metrics`, `tai serve` and
`tai webhook`: the pipeline and what it registered."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import cli_errors, fail
from flows.cli.common import settings as current_settings
from tai import tags

app = typer.Typer()


@app.command()
@cli_errors
def run(
    branch: Annotated[
        str, typer.Option(help="Data branch; its head is pinned at the start.")
    ] = "main",
    commit: Annotated[str | None, typer.Option(help="Data commit id (overrides --branch).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Train even if an identical version exists.")
    ] = False,
) -> None:
    """Run the pipeline (data engineering, training, evaluation, gates, promotion) once."""
    settings = current_settings()
    from flows.distributed import global_rank, train_as_worker
    from flows.preflight import check_inputs

    if global_rank() > 0:  # one of several processes of torchrun or SLURM: train only
        typer.echo(train_as_worker(settings, commit or branch))
        return
    from flows import prefect_server

    prefect_server.start_early()  # beside the input checks and imports below
    _, version = check_inputs(settings, commit or branch)  # fail fast, before any flow runs
    from flows.pipeline import tai_pipeline
    from flows.progress import for_terminal, showing
    from flows.summary import describe_result

    prefect_server.wait_until_started()
    with showing(for_terminal()):
        result = tai_pipeline(
            branch=branch, commit=version.commit_id, settings=settings, force=force
        )
    typer.echo(describe_result(result))


@app.command()
@cli_errors
def demo(
    step: Annotated[
        str, typer.Argument(help="`review`: label the alarm's review branch and retrain.")
    ] = "",
) -> None:
    """The whole loop on the MNIST sample: import, train, change the data, train again,
    monitor a production batch (alarm, review branch); `tai demo review` then labels the
    review branch as a person would, merges it and retrains."""
    if step not in ("", "review"):
        fail(f"unknown demo step {step!r}; run `tai demo`, then `tai demo review`")
    settings = current_settings()
    from flows import prefect_server

    prefect_server.start_early()  # beside the imports and the sample's import
    from flows.demo import review_demo, run_demo
    from flows.progress import echo, for_terminal, showing

    with showing(for_terminal()):
        summary = (review_demo if step else run_demo)(settings, echo=echo)
    typer.echo(summary)


@app.command()
@cli_errors
def serve(
    cron: Annotated[str, typer.Option(help="Schedule of the nightly retraining.")] = "0 3 * * *",
    monitor_cron: Annotated[
        str, typer.Option(help="Schedule of the inbox's monitoring ('' serves none).")
    ] = "0 * * * *",
) -> None:
    """Serve the deployments: retrain on merge, nightly, by hand; monitor the inbox hourly."""
    settings = current_settings()
    from flows.deployments import serve_pipeline

    serve_pipeline(
        branch=settings.data_branch,
        cron=cron,
        store=settings.data_store,
        repository=settings.data_repository,
        monitor=(
            {"inbox": settings.inbox_branch, "prefix": settings.inbox_prefix, "cron": monitor_cron}
            if monitor_cron
            else None
        ),
    )


@app.command()
@cli_errors
def webhook(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
) -> None:
    """Receive lakeFS post-merge webhooks and emit `tai.data.merged` (needs PREFECT_API_URL)."""
    settings = current_settings()
    secret = settings.webhook_secret.get_secret_value()
    if not secret:
        fail(
            "TAI_WEBHOOK_SECRET is not set; set it here and the same value as "
            "LAKEFSACTION_TAI_WEBHOOK_SECRET on the lakeFS server"
        )
    from infra.webhook import serve_webhook

    serve_webhook(
        host, port, secret=secret, workspace=settings.workspace_dir, store=settings.data_store
    )


@app.command()
@cli_errors
def report(
    version: Annotated[
        str, typer.Argument(help="A model version number, or `champion`.")
    ] = "champion",
) -> None:
    """Print the path of a model version's HTML trust report."""
    settings = current_settings()
    from infra.mlflow_store import MlflowStore, RegistryError

    info = MlflowStore(settings).get_version(version)
    path = info.tags.get(tags.REPORT)
    if not path or not Path(path).is_file():
        raise RegistryError(
            f"version {info.version} has no trust report on this machine (expected at {path}); "
            "it is also in the MLflow run's artifacts under tai/"
        )
    typer.echo(path)


@app.command()
@cli_errors
def models() -> None:
    """List the registered model versions with their data commit and gate outcome."""
    settings = current_settings()
    from flows.summary import versions_table
    from infra.mlflow_store import MlflowStore

    store = MlflowStore(settings)
    versions = store.list_versions()
    typer.echo(
        versions_table(versions, {v.version: store.test_metrics(v.run_id) for v in versions})
    )
    pending = [v.version for v in store.incomplete_versions()]
    if pending:
        typer.echo(
            f"not listed: version {', '.join(pending)} (registration not complete: a run is "
            "registering it, or its run failed and the next `tai run` deletes it)"
        )


@app.command()
@cli_errors
def metrics(
    principle: Annotated[
        str | None, typer.Option(help="Only this principle's metrics, e.g. fairness.")
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="The README's table of every metric.")
    ] = False,
) -> None:
    """List every metric a gate may name: its check, principle, direction and meaning."""
    from flows.preflight import check_options
    from tai.evaluation.registry import all_checks

    if markdown:
        from tai.report.metric_table import metrics_markdown

        typer.echo(metrics_markdown())
        return

    options = check_options(current_settings())
    rows = [
        (m, c.principle.value)
        for c in all_checks(options)
        for m in c.metric_specs()
        if principle is None or c.principle.value == principle
    ]
    if not rows:
        fail(f"no metrics for principle {principle!r}; use one of {_principles()}")
    width = max(len(m.name) for m, _ in rows)
    for spec, of in rows:
        arrow = {"higher": "↑", "lower": "↓"}.get(spec.direction, " ")
        flags = [f for f, on in (("bounded", spec.bounded), ("comparable", spec.comparable)) if on]
        extra = f"  [{', '.join(flags)}]" if flags else ""
        typer.echo(f"{spec.name:{width}}  {arrow}  {of:12}  {spec.description}{extra}")


def _principles() -> str:
    from tai.check import Principle

    return ", ".join(p.value for p in Principle)
