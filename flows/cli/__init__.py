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
    """Console entry point: the command's own exit status (0, or 1 for an expected error),
    never a signal.

    Oxen's Rust extension leaves its RocksDB databases open and their background threads
    (``rocksdb:low``, ``rocksdb:high``) and its tokio runtime running until the process
    ends; a plain interpreter exit then runs the native libraries' static destructors
    while those threads still work, and the process sometimes died with SIGSEGV after
    printing its one-line error (exit 139 instead of 1). So the exit is done in order:
    Python's own exit steps run as the interpreter would run them (threads' exit hooks,
    non-daemon threads joined, atexit handlers: Prefect's events are sent and its
    temporary server stopped, logs flushed), stdout and stderr are flushed, and the
    process ends with ``os._exit``, skipping the native teardown that crashed.
    """
    import atexit
    import os
    import sys
    import threading
    import traceback

    try:
        app()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # an unexpected error: its traceback, exit code 1
        traceback.print_exc()
        code = 1
    try:
        # What the interpreter's own exit does first, in its order: the threading module's
        # exit hooks (Prefect's services send what they hold, e.g. `tai.data.merged`),
        # then the non-daemon threads are joined, then the atexit handlers run.
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _exit_code(code: object) -> int:
    """``SystemExit.code`` as the process's status, as the interpreter would make it."""
    import sys

    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()
