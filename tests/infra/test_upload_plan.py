"""What an upload may read: no symbolic link out of the folder, no special file, no key
that leaves its prefix; a refused folder uploads nothing, to either store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.datastore.base import DataStoreError, clean_prefix, upload_plan


def _folder(root: Path) -> Path:
    (root / "train" / "0").mkdir(parents=True)
    (root / "train" / "0" / "a.png").write_bytes(b"a")
    (root / "train" / "0" / "b.png").write_bytes(b"b")
    return root


def test_a_plain_folder_is_uploaded_file_by_file_under_the_prefix(tmp_path):
    folder = _folder(tmp_path / "src")
    plan = upload_plan(folder, "mnist")
    assert [key for _, key in plan] == ["mnist/train/0/a.png", "mnist/train/0/b.png"]
    assert [p.read_bytes() for p, _ in plan] == [b"a", b"b"]


def test_a_link_that_leaves_the_folder_is_refused(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0")
    folder = _folder(tmp_path / "src")
    (folder / "train" / "0" / "escape.png").symlink_to(secret)
    with pytest.raises(DataStoreError) as refused:
        upload_plan(folder, "mnist")
    assert str(refused.value) == (
        f"refusing to upload {folder}: train/0/escape.png (a link to {secret}, outside the "
        "folder); copy the real files into the folder instead (nothing was uploaded)"
    )


def test_a_link_inside_the_folder_uploads_the_files_content_under_its_own_name(tmp_path):
    folder = _folder(tmp_path / "src")
    (folder / "train" / "0" / "c.png").symlink_to(folder / "train" / "0" / "a.png")
    plan = dict((key, p.read_bytes()) for p, key in upload_plan(folder, ""))
    assert plan["train/0/c.png"] == b"a"


def test_special_files_and_folder_links_are_refused(tmp_path):
    folder = _folder(tmp_path / "src")
    os.mkfifo(folder / "train" / "0" / "pipe.png")
    (folder / "train" / "1").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(DataStoreError, match=r"train/1 \(a link to a folder\)") as refused:
        upload_plan(folder, "")
    assert "train/0/pipe.png (not a regular file)" in str(refused.value)


def test_a_backslash_in_a_name_is_refused(tmp_path):
    folder = _folder(tmp_path / "src")
    (folder / "train" / "0" / "..\\..\\x.png").write_bytes(b"x")
    with pytest.raises(DataStoreError, match=r"\(a backslash in the name\)"):
        upload_plan(folder, "")


@pytest.mark.parametrize("prefix", ["../up", "a/../../b", "/abs/../.."])
def test_a_prefix_cannot_leave_the_repository(prefix):
    with pytest.raises(ValueError, match="must be a relative folder inside the repository"):
        clean_prefix(prefix)


@pytest.mark.integration
def test_an_oxen_upload_of_a_folder_with_an_escaping_link_commits_nothing(tmp_path, monkeypatch):
    from infra.datastore.oxen_store import OxenDataStore

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    store = OxenDataStore(tmp_path / "repo", tmp_path / "cache", repository="data")
    store.create_repository("main")
    head = store.resolve("main")
    folder = _folder(tmp_path / "src")
    (folder / "train" / "0" / "escape.png").symlink_to("/etc/passwd")
    with pytest.raises(DataStoreError, match="escape.png"):
        store.upload("main", folder, "mnist")
    with pytest.raises(DataStoreError, match="nothing to commit"):
        store.commit("main", "should not happen")
    assert store.resolve("main") == head
    assert store.list_files("main", prefix="mnist/") == []
