"""How the code version of a run is derived: the environment variable first, else the git
commit, ``-dirty-<digest>`` when tracked files differ from it, else ``unknown``."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from flows.lineage import code_version


@pytest.fixture(autouse=True)
def _fresh_code_version(monkeypatch):
    """code_version is cached for the process: each test derives it anew, and the next test
    (or run) does not inherit what this one derived."""
    monkeypatch.delenv("TAI_CODE_VERSION", raising=False)
    code_version.cache_clear()
    yield
    code_version.cache_clear()


def _git(root, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture
def checkout(tmp_path):
    """A git checkout with one commit of one tracked file."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "train.py").write_text("print('v1')\n")
    _git(root, "add", "train.py")
    _git(root, "commit", "-q", "-m", "v1")
    return root


def test_a_clean_checkout_is_its_commit(checkout):
    sha = _git(checkout, "rev-parse", "HEAD").strip()
    assert len(sha) == 40
    assert code_version(checkout) == sha


def test_uncommitted_changes_add_dirty_and_the_digest_of_the_diff(checkout):
    sha = _git(checkout, "rev-parse", "HEAD").strip()
    (checkout / "train.py").write_text("print('v2')\n")
    diff = _git(checkout, "diff", "HEAD", "--no-ext-diff", "--binary")
    expected = f"{sha}-dirty-{hashlib.sha256(diff.encode()).hexdigest()[:12]}"
    assert code_version(checkout) == expected

    # Another edit of the same commit is another version, never the same one.
    code_version.cache_clear()
    (checkout / "train.py").write_text("print('v3')\n")
    other = code_version(checkout)
    assert other.startswith(f"{sha}-dirty-") and other != expected


def test_untracked_files_do_not_make_a_checkout_dirty(checkout):
    (checkout / "notes.txt").write_text("scratch\n")
    assert code_version(checkout) == _git(checkout, "rev-parse", "HEAD").strip()


def test_the_environment_variable_wins_over_git(checkout, monkeypatch):
    monkeypatch.setenv("TAI_CODE_VERSION", "image-2026.12.1")
    (checkout / "train.py").write_text("print('v2')\n")
    assert code_version(checkout) == "image-2026.12.1"


def test_an_empty_environment_variable_is_not_a_version(checkout, monkeypatch):
    monkeypatch.setenv("TAI_CODE_VERSION", "")
    assert code_version(checkout) == _git(checkout, "rev-parse", "HEAD").strip()


def test_outside_a_checkout_the_version_is_unknown(tmp_path):
    (tmp_path / "not-a-repo").mkdir()
    assert code_version(tmp_path / "not-a-repo") == "unknown"


def test_without_git_the_version_is_unknown(checkout, monkeypatch):
    monkeypatch.setenv("PATH", str(checkout / "no-bin"))  # no git on the PATH
    assert code_version(checkout) == "unknown"
