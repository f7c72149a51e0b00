"""Training on several processes registers one version.

``tai run`` with ``TAI_STRATEGY=ddp`` trains in spawned processes and runs the rest of
the pipeline once; under an external launcher (torchrun, SLURM) the processes of rank > 0
only train.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.distributed import global_rank, launched_externally, trainer_strategy
from infra.mlflow_store import MlflowStore


@pytest.fixture
def no_launcher(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_ranks_come_from_torchrun_or_slurm(no_launcher):
    assert (launched_externally(), global_rank(), trainer_strategy("ddp")) == (
        False,
        0,
        "ddp_spawn",
    )
    no_launcher.setenv("RANK", "3")
    no_launcher.setenv("WORLD_SIZE", "4")
    assert (launched_externally(), global_rank(), trainer_strategy("ddp")) == (True, 3, "ddp")
    no_launcher.delenv("RANK")
    no_launcher.delenv("WORLD_SIZE")
    no_launcher.setenv("SLURM_PROCID", "1")
    no_launcher.setenv("SLURM_NTASKS", "2")
    assert (launched_externally(), global_rank()) == (True, 1)
    no_launcher.setenv("SLURM_NTASKS", "1")  # a single task: not distributed
    assert (launched_externally(), global_rank()) == (False, 0)
    assert trainer_strategy("auto") == "auto"


def _training_runs(settings) -> list:
    return MlflowStore(settings).runs(settings.experiment_name)


@pytest.mark.integration
def test_a_process_of_rank_above_zero_only_trains(tiny_settings, tiny_repo, no_launcher):
    import flows.tasks.training as training

    calls = []
    no_launcher.setattr(training, "fit_model", lambda s, root, run_id: calls.append(run_id))
    no_launcher.setenv("RANK", "1")
    no_launcher.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    assert "rank 1: trained on data commit " + tiny_repo[:12] in result.stdout
    assert calls == [None]  # no MLflow run to log to
    assert _training_runs(tiny_settings) == []
    assert MlflowStore(tiny_settings).list_versions() == []


@pytest.mark.slow
@pytest.mark.integration
def test_ddp_on_two_processes_registers_one_version(tiny_settings, tiny_repo, no_launcher):
    no_launcher.setenv("TAI_STRATEGY", "ddp")
    no_launcher.setenv("TAI_DEVICES", "2")
    no_launcher.setenv("TAI_ACCELERATOR", "cpu")
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    (version,) = MlflowStore(tiny_settings).list_versions()
    assert version.version == "1"
    (run,) = _training_runs(tiny_settings)
    assert run.info.run_id == version.run_id
    # Trained weights came back from the spawned processes: validation accuracy logged.
    assert run.data.metrics["val_acc"] > 0
