import pytest
import torch

from tai.principles.transparency import prototypes as prototypes_module
from tai.principles.transparency.prototypes import Prototypes, select_prototypes


def _mixture(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """Two classes, each three tight, well separated Gaussian clusters in 2-D."""
    g = torch.Generator().manual_seed(seed)
    centres = {
        0: torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]),
        1: torch.tensor([[30.0, 30.0], [40.0, 30.0], [30.0, 45.0]]),
    }
    sizes = (40, 25, 15)  # unequal clusters, so a wrong init is not rescued by symmetry
    points, labels = [], []
    for cls, cls_centres in centres.items():
        for centre, size in zip(cls_centres, sizes, strict=True):
            points.append(centre + 0.5 * torch.randn(size, 2, generator=g))
            labels.append(torch.full((size,), cls))
    perm = torch.randperm(sum(sizes) * 2, generator=g)
    return torch.cat(points)[perm], torch.cat(labels)[perm], centres


def test_one_medoid_lands_near_each_cluster_centre():
    embeddings, labels, centres = _mixture()

    protos = select_prototypes(embeddings, labels, per_class=3, seed=0)

    assert sorted(protos.indices) == [0, 1]
    for cls, cls_centres in centres.items():
        idx = protos.indices[cls]
        assert len(set(idx)) == 3
        assert all(int(labels[i]) == cls for i in idx)
        # each centre has exactly one medoid within 1.5 (clusters are 10+ apart, std 0.5)
        distance = torch.cdist(cls_centres, embeddings[idx])
        assert torch.equal((distance < 1.5).sum(dim=1), torch.ones(3, dtype=torch.long))


def test_medoids_are_ordered_nearest_to_class_mean_first():
    embeddings, labels, _ = _mixture()

    protos = select_prototypes(embeddings, labels, per_class=3)

    for cls, idx in protos.indices.items():
        mean = embeddings[labels == cls].mean(dim=0)
        distance = torch.linalg.vector_norm(embeddings[idx] - mean, dim=1)
        assert torch.all(distance[:-1] <= distance[1:])


def test_single_medoid_minimises_summed_distance_within_class():
    g = torch.Generator().manual_seed(1)
    embeddings = torch.randn(50, 4, generator=g)
    labels = torch.arange(50) % 2

    protos = select_prototypes(embeddings, labels, per_class=1)

    for cls in (0, 1):
        members = torch.nonzero(labels == cls).flatten()
        cost = torch.cdist(embeddings[members], embeddings[members]).sum(dim=1)
        assert protos.indices[cls] == [int(members[cost.argmin()])]


def test_same_seed_gives_same_prototypes():
    embeddings, labels, _ = _mixture()

    first = select_prototypes(embeddings, labels, per_class=3, seed=7)
    second = select_prototypes(embeddings, labels, per_class=3, seed=7)

    assert first == second


def test_all_indices_lists_classes_in_ascending_order():
    protos = Prototypes(indices={2: [5, 6], 0: [1]})

    assert protos.all_indices() == [1, 5, 6]


def test_chunked_distances_match_unchunked(monkeypatch):
    embeddings, labels, _ = _mixture()
    expected = select_prototypes(embeddings, labels, per_class=3)

    monkeypatch.setattr(prototypes_module, "_MAX_CHUNK_ELEMENTS", 7)

    assert select_prototypes(embeddings, labels, per_class=3) == expected


def test_duplicate_points_still_give_distinct_medoids():
    embeddings = torch.zeros(5, 3)  # every point identical

    protos = select_prototypes(embeddings, torch.zeros(5, dtype=torch.long), per_class=4)

    assert len(set(protos.indices[0])) == 4


def test_class_smaller_than_per_class_is_rejected_naming_class_and_counts():
    embeddings = torch.randn(5, 2)
    labels = torch.tensor([0, 0, 0, 1, 1])

    with pytest.raises(
        ValueError, match=r"class 1 has 2 examples but per_class=3.*lower per_class"
    ):
        select_prototypes(embeddings, labels, per_class=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_class": 0}, r"per_class must be at least 1, got 0"),
        ({"max_iter": 0}, r"max_iter must be at least 1, got 0"),
        ({"n_init": 0}, r"n_init must be at least 1, got 0"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_prototypes(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), **kwargs)


def test_shape_mismatch_is_rejected():
    with pytest.raises(
        ValueError, match=r"labels must have shape \(N,\) = \(4,\).*got shape \(3,\)"
    ):
        select_prototypes(torch.randn(4, 2), torch.zeros(3, dtype=torch.long))


def test_embeddings_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"embeddings must have shape \(N, D\)"):
        select_prototypes(torch.randn(4), torch.zeros(4, dtype=torch.long))


def test_empty_input_is_rejected():
    with pytest.raises(ValueError, match="embeddings is empty"):
        select_prototypes(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def test_float_labels_are_rejected():
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        select_prototypes(torch.randn(4, 2), torch.zeros(4))


def test_non_finite_embeddings_are_rejected():
    embeddings = torch.randn(4, 2)
    embeddings[2, 1] = float("nan")

    with pytest.raises(ValueError, match="NaN or infinite"):
        select_prototypes(embeddings, torch.zeros(4, dtype=torch.long))
