"""What a long run shows a person while it runs: the stage, training, each check.

On a terminal, a live display (rich): one line per stage with a spinner and its elapsed
time, a progress bar for training (epoch, batch, loss) and one for the evaluation's
checks (the check running now). When the output is not a terminal (CI, a log file, a
pipe), one plain line per stage, per epoch and per check, with durations. It writes to
stderr, so what a command prints on stdout (a summary, ``--json``) stays clean; a run that
fails stops the display first, so the one-line error is the last thing printed.

Every stage's duration is kept in :attr:`RunProgress.timings`; the pipeline logs them to
MLflow as ``time/<stage>`` metrics, so a slow stage is visible later too.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class RunProgress:
    """Reports the stages of a run; records their durations.

    Args:
        stream: where to write (default stderr).
        live: a live display (True), plain lines (False), or nothing but the timings
            (None: quiet). :func:`for_terminal` chooses by whether ``stream`` is a TTY.
    """

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = False) -> None:
        self.stream = stream or sys.stderr
        self.live = live
        self.timings: dict[str, float] = {}
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._open_stages: dict[str, TaskID] = {}
        self._started = 0.0
        self._epoch_seen = -1

    # -- stages -------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the stage ``name`` and show it while it runs."""
        start = time.perf_counter()
        task = self._open(name)
        failed = True
        try:
            yield
            failed = False
        finally:
            seconds = time.perf_counter() - start
            self.timings[name] = self.timings.get(name, 0.0) + seconds
            self._close(task, name, seconds, failed=failed)

    def _open(self, name: str) -> TaskID | None:
        if self._progress is not None:
            task = self._progress.add_task(name, total=None, extra="")
            self._open_stages[name] = task
            return task
        return None

    def _close(self, task: TaskID | None, name: str, seconds: float, *, failed: bool) -> None:
        """Mark the stage done (a failed stage says nothing: its error line follows)."""
        self._open_stages.pop(name, None)
        if self._progress is not None and task is not None:
            mark = "[red]✗[/]" if failed else "[green]✓[/]"
            self._progress.update(task, description=f"{mark} {name}", total=1, completed=1)
            self._progress.stop_task(task)
        elif self.live is False and not failed:
            self._line(f"{name} done in {seconds:.1f} s")

    # -- training -----------------------------------------------------------------------
    def training_started(self, epochs: int, batches_per_epoch: int) -> None:
        self._epoch_seen = -1
        self._started = time.perf_counter()
        if self._progress is not None:
            self._task = self._stage_task("training", max(epochs * batches_per_epoch, 1))
        self._epochs, self._batches = epochs, max(batches_per_epoch, 1)

    def training_step(self, epoch: int, batch: int, loss: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task,
                completed=epoch * self._batches + batch + 1,
                extra=f"epoch {epoch + 1}/{self._epochs}  batch {batch + 1}/{self._batches}  "
                f"loss {loss:.3f}",
            )
        elif self.live is False and batch + 1 == self._batches and epoch != self._epoch_seen:
            self._epoch_seen = epoch
            elapsed = time.perf_counter() - self._started
            self._line(
                f"training: epoch {epoch + 1}/{self._epochs}, loss {loss:.3f} ({elapsed:.1f} s)"
            )

    def training_done(self) -> None:
        self._task = None

    def _stage_task(self, name: str, total: int) -> TaskID:
        """The bar of the open stage ``name`` (one line per stage), or a new one."""
        assert self._progress is not None
        task = self._open_stages.get(name)
        if task is None:
            return self._progress.add_task(name, total=total, extra="")
        self._progress.update(task, total=total, completed=0)
        return task

    # -- evaluation checks ----------------------------------------------------------------
    @contextlib.contextmanager
    def check(self, name: str, index: int, total: int) -> Iterator[None]:
        """Show the evaluation's check ``name`` (``index`` of ``total``) while it runs."""
        start = time.perf_counter()
        if self._progress is not None:
            if self._task is None or index == 0:
                self._task = self._stage_task("evaluation", total)
            self._progress.update(self._task, completed=index, extra=name)
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.timings[f"check/{name}"] = seconds
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, completed=index + 1)
                if index + 1 == total:
                    self._progress.update(self._task, extra="")
                    self._task = None
            elif self.live is False:
                self._line(f"evaluation: {name} {seconds:.1f} s ({index + 1}/{total})")

    # -- display ----------------------------------------------------------------------
    def echo(self, text: str) -> None:
        """Print ``text`` on stdout while the display runs.

        A live display redraws its lines by moving the cursor up over what it drew last;
        anything written to the same terminal behind its back (``typer.echo`` writes to
        stdout's buffer directly) is drawn over, or the display repeats below it. So on a
        terminal the text goes through the display's console, above the live lines.
        Redirected to a file or a pipe, stdout gets the text itself.
        """
        if self._progress is not None and _is_terminal(sys.stdout):
            self._settle_finished()
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, flush=True)

    def _settle_finished(self) -> None:
        """Print the stages finished so far above the live lines and drop them from the
        display, so that text echoed now comes after them, in the order things ran."""
        assert self._progress is not None
        done = []
        for task in self._progress.tasks:
            if not task.finished:
                break
            done.append(task)
        if done:
            self._progress.console.print(self._progress.make_tasks_table(done))
            for task in done:
                self._progress.remove_task(task.id)

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __enter__(self) -> RunProgress:
        if self.live:
            self._progress = Progress(
                SpinnerColumn(finished_text=" "),
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[extra]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=False,
                # rich would send every print() to the display's terminal, even when
                # stdout is a file: only take it over when it is the terminal too
                redirect_stdout=_is_terminal(sys.stdout),
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


_QUIET = RunProgress(live=None)
_current: list[RunProgress] = [_QUIET]


def current() -> RunProgress:
    """The progress display of this process (a quiet one that only keeps timings when the
    run was not started from a terminal command)."""
    return _current[-1]


@contextlib.contextmanager
def showing(progress: RunProgress) -> Iterator[RunProgress]:
    """Make ``progress`` the current display for the duration of a command."""
    _current.append(progress)
    try:
        with progress:
            yield progress
    finally:
        _current.pop()


def echo(text: str) -> None:
    """Print ``text`` on stdout without breaking the current display (see
    :meth:`RunProgress.echo`)."""
    current().echo(text)


def _is_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def for_terminal(stream: TextIO | None = None) -> RunProgress:
    """A live display on a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    return RunProgress(stream, live=_is_terminal(stream))
