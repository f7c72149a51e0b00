"""Bad input on the production stack: a port already in use, a wrong PostgreSQL password, a
work pool that does not exist, and `tai run` with a server unreachable at start. Each is
one line that names the problem and what to do, and nothing is registered."""

from __future__ import annotations

import copy
import dataclasses
import socket

import pytest

from infra.stack import Stack, StackError, postgres
from infra.stack.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def one_line(message: str) -> str:
    assert message.strip() and "\n" not in message.strip(), f"not one line: {message!r}"
    return message


def detached(stack: Stack, tmp_path, **changes) -> Stack:
    """A copy of the stack's state with its own folder (so nothing it does is written back
    to the real state file), free ports for its services, and ``changes``."""
    state = copy.deepcopy(stack.state)
    state["root"] = str(tmp_path)
    state["ports"] = {name: free_port() for name in state["ports"]} | {
        "postgres": stack.state["ports"]["postgres"]
    }
    state["processes"] = {}
    state.update(changes)
    return Stack(state)


def test_a_port_in_use_is_refused_in_one_line(idle):
    side = idle
    versions = [v.version for v in side.versions()]
    port = side.stack.state["ports"]["webhook"]
    side._expected_down = ("webhook",)
    side.stack.stop_service("webhook")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(StackError) as info:
            side.stack.start_service("webhook")

    message = one_line(str(info.value))
    assert f"port {port} of webhook" in message and "in use" in message
    assert side.stack.record("webhook") is None  # nothing started, nothing recorded
    assert [v.version for v in side.versions()] == versions
    # (the idle fixture starts the webhook again)


def test_a_wrong_postgres_password_is_refused_in_one_line_before_mlflow_starts(side, tmp_path):
    versions = [v.version for v in side.versions()]
    wrong = detached(side.stack, tmp_path, postgres_password="not-the-password")

    with pytest.raises(StackError) as info:
        wrong.start_service("mlflow")

    message = one_line(str(info.value))
    assert "refused the password" in message and "password authentication failed" in message
    assert wrong.record("mlflow") is None
    assert not (tmp_path / "logs" / "mlflow.log").exists()  # never started
    assert [v.version for v in side.versions()] == versions


def test_a_postgres_that_does_not_answer_is_one_line(side):
    pg = dataclasses.replace(side.stack._pg(), port=free_port())

    with pytest.raises(StackError) as info:
        postgres.check_login(pg, "mlflow")

    assert f"cannot log in to PostgreSQL at 127.0.0.1:{pg.port}" in one_line(str(info.value))


def test_a_work_pool_that_does_not_exist_is_one_line(side, tmp_path):
    with pytest.raises(StackError) as info:
        side.stack.check_work_pool("no-such-pool")

    message = one_line(str(info.value))
    assert "work pool 'no-such-pool' does not exist" in message
    assert "prefect work-pool create no-such-pool" in message


@pytest.mark.parametrize("server", ["mlflow", "prefect"])
def test_tai_run_with_a_server_unreachable_says_which_in_one_line(idle, server):
    side = idle
    side.ensure_repository()
    versions = [v.version for v in side.versions()]
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    if server == "mlflow":
        env |= {"TAI_MLFLOW_TRACKING_URI": dead, "MLFLOW_TRACKING_URI": dead}
    else:
        env |= {"PREFECT_API_URL": f"{dead}/api"}

    done = side.tai("run", env=env, check=False, timeout=600)

    assert [v.version for v in side.versions()] == versions
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and dead in errors[0], done.stderr[-3000:]
    assert "training" not in done.stderr  # refused before anything trains
