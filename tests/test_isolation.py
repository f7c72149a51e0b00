"""The test harness itself: no test leaks process-wide state into the next one."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from tests.conftest import process_state_restored


def test_environment_logging_and_warning_filters_are_put_back():
    os.environ.pop("TAI_ISOLATION_PROBE", None)
    before_filters = list(warnings.filters)
    logger = logging.getLogger("tai.isolation.probe")
    logger.setLevel(logging.INFO)
    with process_state_restored():
        os.environ["TAI_ISOLATION_PROBE"] = "leaked"
        os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
        logger.setLevel(logging.ERROR)
        logging.getLogger("tai.isolation.new").setLevel(logging.CRITICAL)
        logging.disable(logging.ERROR)
        warnings.filterwarnings("ignore", module="tai_isolation_probe")
    assert "TAI_ISOLATION_PROBE" not in os.environ
    assert logger.level == logging.INFO
    assert logging.getLogger("tai.isolation.new").level == logging.NOTSET
    assert logging.root.manager.disable == logging.NOTSET
    assert warnings.filters == before_filters


@pytest.mark.integration
def test_the_cli_leaves_no_tracking_uri_behind(workspace):
    """The CLI points MLflow at the workspace with setdefault: the autouse fixture removes
    it again, so the next test's workspace is not shadowed by this one's."""
    from typer.testing import CliRunner

    from flows.cli import app

    before = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with process_state_restored():
            result = CliRunner().invoke(app, ["models"])
            assert result.exit_code == 0, result.output
            assert os.environ["MLFLOW_TRACKING_URI"] == workspace.tracking_uri
        assert "MLFLOW_TRACKING_URI" not in os.environ
    finally:
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before
