"""The marker check (tests/markers.py) fails a test that does what a marker means without
the marker, and leaves a marked one alone."""

from __future__ import annotations

import pytest

CASES = """
import pytest
import pytorch_lightning as pl
from mlflow.tracking import MlflowClient


def _fit():
    # Trainer.fit is watched at the class: calling it is enough (it fails on no model).
    with pytest.raises(Exception):
        pl.Trainer.fit(None, None)


def test_trains_unmarked():
    _fit()


@pytest.mark.slow
def test_trains_marked():
    _fit()


def test_mlflow_unmarked():
    MlflowClient(tracking_uri="http://127.0.0.1:9")  # connects only when asked


@pytest.mark.integration
def test_mlflow_marked():
    MlflowClient(tracking_uri="http://127.0.0.1:9")  # connects only when asked


def test_plain():
    assert 1 + 1 == 2


def test_a_real_failure_is_not_hidden():
    MlflowClient(tracking_uri="http://127.0.0.1:9")
    assert False, "the test's own failure"
"""


@pytest.mark.integration  # the inner tests create an MlflowClient in this process
def test_a_missing_marker_fails_the_test_and_names_it(pytester):
    pytester.makeini("[pytest]\nmarkers =\n    slow: s\n    integration: i\n")
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest_inprocess("-p", "tests.markers", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=3)
    out = result.stdout.str()
    assert "test_cases.py::test_trains_unmarked trains a model (Trainer.fit): mark it `slow`" in out
    assert (
        "test_cases.py::test_mlflow_unmarked talks to MLflow (MlflowClient): mark it `integration`"
        in out
    )
    assert "the test's own failure" in out
    assert "test_a_real_failure_is_not_hidden talks to MLflow" not in out
