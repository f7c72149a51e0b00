import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset


def _squares(n: int, seed: int) -> TensorDataset:
    """Class k has a bright 4x4 square in the k-th corner of a noisy 12x12 image."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 1, 12, 12, generator=g) * 0.3
    for i, k in enumerate(y.tolist()):
        r, c = [(0, 0), (0, 8), (8, 0)][k]
        x[i, 0, r : r + 4, c : c + 4] = 1.0
    return TensorDataset(x, y)


@pytest.fixture
def loaders():
    train = DataLoader(_squares(96, 0), batch_size=32, shuffle=True)
    val = DataLoader(_squares(60, 1), batch_size=16)
    return train, val
