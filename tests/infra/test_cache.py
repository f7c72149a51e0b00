"""The immutable commit cache: complete entries only, atomic, read-only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from infra.datastore.cache import CommitCache


def _write_two_files(folder: Path) -> None:
    (folder / "mnist" / "train").mkdir(parents=True)
    (folder / "mnist" / "train" / "a.png").write_bytes(b"a")
    (folder / "metadata.csv").write_text("path,label,split\n")


def _leftovers(cache: CommitCache) -> list[str]:
    return sorted(p.name for p in (cache.root / "oxen" / "data").iterdir())


def test_fill_creates_entry_that_get_returns(tmp_path):
    cache = CommitCache(tmp_path / "cache")
    assert cache.get("oxen", "data", "abc123") is None

    path = cache.fill("oxen", "data", "abc123", _write_two_files)

    assert path == tmp_path / "cache" / "oxen" / "data" / "abc123"
    assert cache.get("oxen", "data", "abc123") == path
    assert (path / "mnist" / "train" / "a.png").read_bytes() == b"a"
    assert _leftovers(cache) == ["abc123"]


def test_failed_writer_leaves_no_entry_and_no_temp_folder(tmp_path):
    cache = CommitCache(tmp_path / "cache")

    def broken(folder: Path) -> None:
        _write_two_files(folder)
        raise OSError("disk full while writing")

    with pytest.raises(OSError, match="disk full while writing"):
        cache.fill("oxen", "data", "abc123", broken)

    assert cache.get("oxen", "data", "abc123") is None
    assert _leftovers(cache) == []


def test_failed_verify_leaves_no_entry(tmp_path):
    cache = CommitCache(tmp_path / "cache")

    def reject(folder: Path) -> None:
        raise ValueError(f"unexpected files in {folder.name}")

    with pytest.raises(ValueError, match="unexpected files in"):
        cache.fill("oxen", "data", "abc123", _write_two_files, verify=reject)

    assert _leftovers(cache) == []


def test_entry_files_are_read_only(tmp_path):
    cache = CommitCache(tmp_path / "cache")

    path = cache.fill("oxen", "data", "abc123", _write_two_files)

    files = [p for p in path.rglob("*") if p.is_file()]
    assert len(files) == 2
    # Mode bits, not a write attempt: tests may run as root, who ignores them.
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o222 == 0 for p in files)


def test_existing_entry_is_returned_without_calling_the_writer(tmp_path):
    cache = CommitCache(tmp_path / "cache")
    first = cache.fill("oxen", "data", "abc123", _write_two_files)

    def must_not_run(folder: Path) -> None:
        raise AssertionError("writer called for an existing entry")

    assert cache.fill("oxen", "data", "abc123", must_not_run) == first


def test_concurrent_fill_keeps_the_first_rename(tmp_path):
    cache = CommitCache(tmp_path / "cache")
    other_process = CommitCache(tmp_path / "cache")

    def slow_writer(folder: Path) -> None:
        (folder / "mine.txt").write_text("late")
        # Another process finishes the same key while this writer is still busy.
        other_process.fill("oxen", "data", "abc123", lambda d: (d / "theirs.txt").write_text("x"))

    path = cache.fill("oxen", "data", "abc123", slow_writer)

    assert sorted(p.name for p in path.iterdir()) == ["theirs.txt"]
    assert _leftovers(cache) == ["abc123"]


@pytest.mark.parametrize(
    ("store", "repository", "commit_id", "bad"),
    [
        ("oxen", "data", "../escape", "commit_id"),
        ("oxen", "a/b", "abc", "repository"),
        ("", "data", "abc", "store"),
        ("oxen", "data", ".hidden", "commit_id"),
    ],
)
def test_path_for_rejects_keys_that_are_not_one_path_component(
    tmp_path, store, repository, commit_id, bad
):
    cache = CommitCache(tmp_path / "cache")

    with pytest.raises(ValueError, match=f"cache key part `{bad}` must be one path component"):
        cache.path_for(store, repository, commit_id)
