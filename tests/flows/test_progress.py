"""The live view of a long run: plain lines when not on a terminal, a live display on
one, timings either way, and nothing that breaks on a pipe, a narrow terminal or a
failure half-way."""

from __future__ import annotations

import io
import re

import pytest

from flows.progress import RunProgress, current, echo, for_terminal, showing


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_stages(progress: RunProgress) -> None:
    with progress.stage("data engineering"):
        pass
    with progress.stage("training"):
        progress.training_started(2, 3)
        for epoch in range(2):
            for batch in range(3):
                progress.training_step(epoch, batch, 1.0 / (1 + epoch * 3 + batch))
        progress.training_done()
    with progress.stage("evaluation"):
        for i, name in enumerate(["calibration", "corruptions"]):
            with progress.check(name, i, 2):
                pass


def test_without_a_terminal_each_stage_epoch_and_check_is_one_plain_line():
    out = io.StringIO()
    assert for_terminal(out).live is False
    with showing(for_terminal(out)) as progress:
        _run_stages(progress)
    text = out.getvalue()
    untimed = [re.sub(r" \(?(done in )?[0-9.]+ s\)?", "", line) for line in text.splitlines()]
    assert untimed == [
        "data engineering",
        "training: epoch 1/2, loss 0.333",
        "training: epoch 2/2, loss 0.167",
        "training",
        "evaluation: calibration (1/2)",
        "evaluation: corruptions (2/2)",
        "evaluation",
    ]
    assert set(progress.timings) == {
        "data engineering",
        "training",
        "evaluation",
        "check/calibration",
        "check/corruptions",
    }
    assert all(v >= 0 for v in progress.timings.values())


@pytest.mark.parametrize("width", [20, 120])
def test_on_a_terminal_the_live_display_draws_every_stage_even_when_narrow(width, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    out = _Tty()
    progress = for_terminal(out)
    assert progress.live is True
    with showing(progress):
        _run_stages(progress)
    text = out.getvalue()
    for stage in ("data engineering", "training", "evaluation"):
        assert stage[: max(width // 4, 4)] in text


def test_a_failure_half_way_stops_the_display_so_the_error_is_printed_last():
    out = _Tty()
    with pytest.raises(RuntimeError, match="boom"):
        with showing(for_terminal(out)) as progress:
            with progress.stage("training"):
                raise RuntimeError("boom")
    assert current().live is None  # the quiet default is back
    assert "training" in out.getvalue()
    # the display was stopped: anything written now comes after it
    out.write("error: boom\n")
    assert out.getvalue().rstrip().endswith("error: boom")


def test_the_quiet_default_only_keeps_timings():
    progress = current()
    assert progress.live is None
    progress.timings.clear()
    with progress.stage("x"):
        pass
    assert "x" in progress.timings


def test_a_stage_that_fails_prints_no_done_line():
    out = io.StringIO()
    with pytest.raises(ValueError):
        with showing(for_terminal(out)) as progress:
            with progress.stage("inputs"):
                pass
            with progress.stage("data engineering"):
                raise ValueError("a split is missing")
    assert re.sub(r"[0-9.]+ s", "X s", out.getvalue()) == "inputs done in X s\n"


def _screen(text: str, columns: int = 100, lines: int = 40) -> list[str]:
    """What a terminal shows after ``text``: cursor moves and erases applied (pyte)."""
    pyte = pytest.importorskip("pyte")
    screen = pyte.Screen(columns, lines)
    screen.set_mode(pyte.modes.LNM)  # a newline also returns the carriage, as a tty does
    pyte.Stream(screen).feed(text)
    shown = [line.rstrip() for line in screen.display]
    while shown and not shown[-1]:
        shown.pop()
    return shown


def test_lines_echoed_during_a_live_display_are_drawn_once_above_it(monkeypatch):
    # stdout and stderr are the same terminal, as when a person runs `tai demo`
    terminal = _Tty()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setenv("COLUMNS", "100")
    with showing(for_terminal(terminal)) as progress:
        echo("[1/2] first run ...")
        _run_stages(progress)
        echo("first run: version 1 is champion")
        echo("[2/2] second run ...")
        with progress.stage("data engineering"):
            pass
    shown = _screen(terminal.getvalue())
    # in the order things ran, each drawn once
    assert [line.strip().split("━")[0].strip() for line in shown] == [
        "[1/2] first run ...",
        "✓ data engineering",
        "✓ training",
        "✓ evaluation",
        "first run: version 1 is champion",
        "[2/2] second run ...",
        "✓ data engineering",
    ]


def test_echo_goes_to_stdout_itself_when_stdout_is_not_the_terminal(monkeypatch):
    terminal, redirected = _Tty(), io.StringIO()
    monkeypatch.setattr("sys.stdout", redirected)
    with showing(for_terminal(terminal)):
        echo("data commit abc")
        print("a library's print")
    assert redirected.getvalue() == "data commit abc\na library's print\n"
    assert "data commit" not in terminal.getvalue()
