"""The retry rule of the pipeline's tasks: an outside system briefly away is retried, an
error that would fail the same way again is not."""

from __future__ import annotations

import pytest
from prefect import flow, task

from flows.tasks._retry import retry_transient


class _State:
    def __init__(self, error: BaseException | None):
        self.error = error

    def result(self):
        if self.error is not None:
            raise self.error
        return 1


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectionError("refused"), True),
        (ConnectionRefusedError("refused"), True),  # a subclass of ConnectionError
        (TimeoutError("slow"), True),
        (ValueError("corrupt image"), False),
        (FileNotFoundError("no such branch"), False),
        (None, False),
    ],
)
def test_only_connection_errors_and_time_outs_are_retried(error, retried):
    assert retry_transient(None, None, _State(error)) is retried


def _flaky_task(error: BaseException):
    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def step():
        calls.append(1)
        if len(calls) == 1:
            raise error
        return len(calls)

    @flow
    def run():
        return step()

    return run, calls


@pytest.mark.integration  # a Prefect flow run
def test_a_task_that_loses_its_connection_once_is_retried_and_succeeds():
    run, calls = _flaky_task(ConnectionError("server restarting"))
    assert run() == 2
    assert len(calls) == 2


@pytest.mark.integration  # a Prefect flow run
def test_a_task_with_a_permanent_error_fails_at_once():
    run, calls = _flaky_task(ValueError("image 3.png does not decode"))
    with pytest.raises(ValueError, match="does not decode"):
        run()
    assert len(calls) == 1
