"""The stack itself: every service up, listening on loopback only; the registry works on the
tracking server as configured by production's settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.stack.processes import stack_processes
from tests.integration.conftest import register_probe_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def listening_addresses(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state that ``pids`` hold."""
    inode_owner = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inode_owner[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inode_owner:
                continue
            address, port = local.split(":")
            found.append((inode_owner[inode], _address(address, width), int(port, 16)))
    return found


def _address(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    return ":".join(b"".join(words)[i : i + 2].hex() for i in range(0, 16, 2))


def test_every_service_answers_and_listens_on_loopback_only(stack):
    status = stack.status()
    assert all(s["alive"] and s["answers"] for s in status.values()), status

    sockets = listening_addresses(set(stack_processes(stack.state["stack_id"])))

    ports = {port for _, _, port in sockets}
    assert set(stack.state["ports"].values()) <= ports, (stack.state["ports"], sockets)
    loopback = ("127.0.0.1", "0000:0000:0000:0000:0000:0000:0000:0001")
    assert [s for s in sockets if s[1] not in loopback] == []


def test_a_logged_model_registers_on_the_tracking_server(stack):
    register_probe_model(stack)


def test_artifacts_go_to_the_tracking_server_when_only_its_uri_is_set(stack, tmp_path):
    from infra.mlflow_store import MlflowStore
    from infra.settings import load_settings

    settings = load_settings(
        workspace=tmp_path / "ws",
        mlflow_tracking_uri=stack.urls["mlflow"],
        experiment_name=f"artifact-default-{os.getpid()}",
    )
    store = MlflowStore(settings)

    run = store.client.get_run(store.create_run("where do artifacts go", {}))

    assert not run.info.artifact_uri.startswith("file:"), run.info.artifact_uri


def test_an_unreachable_registry_is_not_taken_for_no_champion(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    from infra.mlflow_store import MlflowStore, RegistryError
    from infra.settings import load_settings
    from infra.stack.processes import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = load_settings(
        workspace=tmp_path / "ws", mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}"
    )

    with pytest.raises((MlflowException, RegistryError, OSError)):
        MlflowStore(settings).champion()


def test_a_registry_without_the_model_has_no_champion(stack, tmp_path):
    from infra.mlflow_store import MlflowStore
    from infra.settings import load_settings

    settings = load_settings(
        workspace=tmp_path / "ws",
        mlflow_tracking_uri=stack.urls["mlflow"],
        registered_model_name=f"never-registered-{os.getpid()}",
    )

    assert MlflowStore(settings).champion() is None
