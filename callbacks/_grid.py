"""The seeded share of a check's grid that an interim check runs (robustness, attacks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

Cell = TypeVar("Cell")


def grid_share(
    cells: Sequence[Cell], per_check: int | None, check_index: int, seed: int
) -> list[Cell]:
    """The cells interim check number ``check_index`` (0, 1, ...) runs, in grid order.

    The grid is shuffled once with ``seed``; check ``k`` takes the next ``per_check``
    cells of that order, wrapping around, so consecutive checks cover the whole grid
    before any cell repeats. ``None`` or ``per_check >= len(cells)``: the whole grid.
    """
    n = len(cells)
    if per_check is None or per_check >= n:
        return list(cells)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    start = (check_index * per_check) % n
    chosen = {order[(start + i) % n] for i in range(per_check)}
    return [cells[i] for i in sorted(chosen)]


def interim_index(current_epoch: int, every_n_epochs: int | None) -> int:
    """0 for the first interim check of a fit, 1 for the second, ... (from the epoch)."""
    return (current_epoch + 1) // (every_n_epochs or 1) - 1
