"""Markers that tell the truth: a test that trains must be marked ``slow``; a test that
talks to MLflow, Prefect or Oxen (a flow run is Prefect) must be marked ``integration``.
`make test-fast` leaves both out, so a missing marker would make it slow (or make it need
the outside systems); this plugin fails such a test instead, naming the marker it lacks.

What is watched, in this process (a test that starts `tai` in a subprocess is not seen;
those tests are marked by hand):
- training: ``pytorch_lightning.Trainer.fit``;
- MLflow: an ``MlflowClient`` created; Prefect: a flow called; Oxen: an ``oxen.Repo`` opened.
"""

from __future__ import annotations

import functools

import pytest

_SEEN: dict[str, str] = {}


def _watch(owner: type, name: str, what: str, marker: str) -> None:
    original = getattr(owner, name)
    if getattr(original, "_tai_watched", False):
        return

    @functools.wraps(original)
    def watched(*args, **kwargs):
        _SEEN.setdefault(marker, what)
        return original(*args, **kwargs)

    watched._tai_watched = True
    setattr(owner, name, watched)


def install() -> None:
    """Wrap what the markers mean; called once per test process."""
    import oxen
    import pytorch_lightning as pl
    from mlflow.tracking import MlflowClient
    from prefect.flows import Flow

    _watch(pl.Trainer, "fit", "trains a model (Trainer.fit)", "slow")
    _watch(MlflowClient, "__init__", "talks to MLflow (MlflowClient)", "integration")
    _watch(Flow, "__call__", "runs a Prefect flow", "integration")
    _watch(oxen.Repo, "__init__", "opens an Oxen repository", "integration")


def missing_markers(item: pytest.Item, seen: dict[str, str]) -> list[str]:
    """One line per marker the test lacks for what it did."""
    return [
        f"{item.nodeid} {what}: mark it `{marker}`"
        for marker, what in sorted(seen.items())
        if item.get_closest_marker(marker) is None
    ]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _SEEN.clear()
    outcome = yield
    lines = missing_markers(item, _SEEN)
    if lines and outcome.excinfo is None:
        outcome.force_exception(pytest.fail.Exception("\n".join(lines), pytrace=False))


def pytest_configure(config):
    # xdist's controller runs no test: only its workers (and a plain run) need the watch,
    # and the imports it takes cost the controller seconds before any worker starts.
    if config.getoption("numprocesses", default=None) and not hasattr(config, "workerinput"):
        return
    install()
