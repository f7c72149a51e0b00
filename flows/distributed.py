"""Which process this is, when training runs on several.

Two ways to train on several processes, and in both the pipeline registers once:

- ``tai run`` with ``TAI_STRATEGY=ddp`` on one machine: the launching process runs the
  pipeline; only ``Trainer.fit`` runs in processes it spawns (Lightning's ``ddp_spawn``),
  and the trained weights and metrics come back to it. Data engineering, evaluation,
  registration, the report and the alias happen once, in the launching process.
- A launcher that starts every process itself (``torchrun``, SLURM's ``srun``: several
  nodes): each process runs ``tai run``; the one of global rank 0 runs the whole
  pipeline, the others only materialise the same data commit and train with it.
"""

from __future__ import annotations

import os

# Set by torchrun (and torch.distributed.launch) and by SLURM for every process.
_RANK_VARIABLES = (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"))


def launched_externally() -> bool:
    """Whether a launcher started this process as one of several (torchrun, SLURM)."""
    return any(int(os.environ.get(size) or 1) > 1 for _, size in _RANK_VARIABLES)


def global_rank() -> int:
    """This process's global rank under an external launcher; 0 otherwise."""
    for rank, size in _RANK_VARIABLES:
        if int(os.environ.get(size) or 1) > 1:
            return int(os.environ.get(rank) or 0)
    return 0


def trainer_strategy(strategy: str) -> str:
    """The Lightning strategy a run uses: ``ddp`` started by ``tai run`` itself trains in
    spawned processes (``ddp_spawn``) so the pipeline around it runs once; under an
    external launcher, or any other strategy, as given."""
    if strategy == "ddp" and not launched_externally():
        return "ddp_spawn"
    return strategy


def train_as_worker(settings, ref: str) -> str:
    """What a process of rank > 0 does under an external launcher: materialise the data
    commit and train with the others; rank 0 evaluates, registers and reports. Returns the
    line it prints."""
    from flows.stores import make_data_store
    from flows.tasks.training import fit_model

    store = make_data_store(settings)
    commit = store.version(ref).commit_id
    fit_model(settings, store.materialize(commit), run_id=None)
    return (
        f"rank {global_rank()}: trained on data commit {commit[:12]}; rank 0 evaluates, "
        "registers and reports"
    )
