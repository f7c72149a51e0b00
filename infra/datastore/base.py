"""The data-store interface: versioned image datasets behind branches and commits.

Shaped after the lakeFS high-level SDK (repository, branch, upload, commit with metadata,
merge, diff, log), so the embedded Oxen backend and the lakeFS backend are interchangeable.
A flow resolves a branch to a commit id once and then reads only that commit, through
:meth:`DataStore.materialize`, which gives an immutable local copy keyed by commit id.
"""

from __future__ import annotations

import abc
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tai import tags

ChangeKind = Literal["added", "removed", "modified"]


def clean_prefix(prefix: str, *, reserved: tuple[str, ...] = ()) -> str:
    """A destination folder as ``a/b``: no ``..``, no empty parts, none of ``reserved``.

    Raises:
        ValueError: the prefix would leave the repository or names a reserved folder.
    """
    parts = [part for part in prefix.replace("\\", "/").split("/") if part not in ("", ".")]
    if any(part == ".." or part in reserved for part in parts):
        raise ValueError(
            f"`dest_prefix` must be a relative folder inside the repository, got {prefix!r}"
        )
    return "/".join(parts)


def upload_plan(local_dir: Path, prefix: str) -> list[tuple[Path, str]]:
    """The files under ``local_dir`` and the key each gets under ``prefix``, checked before
    anything is copied or staged, so a refused folder leaves no partial upload.

    Symbolic links are not followed out of the folder: a link to a file inside it uploads
    that file's content under the link's name; a link that leaves the folder (to
    ``/etc/passwd``, say), a link to a folder, and special files (pipes, sockets, devices)
    are refused. Keys are ``/``-separated relative paths; a name holding a backslash, which
    some object stores read as a separator, is refused too.

    Raises:
        DataStoreError: naming every offending path and what to do.
    """
    root = Path(local_dir).resolve()
    plan: list[tuple[Path, str]] = []
    refused: list[str] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in sorted(dirs):
            if (Path(folder) / name).is_symlink():
                refused.append(f"{_shown(root, Path(folder) / name)} (a link to a folder)")
        for name in sorted(names):
            path = Path(folder) / name
            shown = _shown(root, path)
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    refused.append(f"{shown} (a link to {target}, outside the folder)")
                    continue
                if not target.is_file():
                    refused.append(f"{shown} (a link to something that is not a file)")
                    continue
            elif not stat.S_ISREG(path.lstat().st_mode):
                refused.append(f"{shown} (not a regular file)")
                continue
            relative = path.relative_to(root).as_posix()
            if "\\" in relative:
                refused.append(f"{shown} (a backslash in the name)")
                continue
            plan.append((path, "/".join(filter(None, [prefix, relative]))))
    if refused:
        listed = "; ".join(refused[:5]) + (
            f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
        )
        raise DataStoreError(
            f"refusing to upload {local_dir}: {listed}; copy the real files into the folder "
            "instead (nothing was uploaded)"
        )
    return sorted(plan, key=lambda item: item[1])


def _shown(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def check_commit_arguments(message: str, metadata: dict[str, str]) -> None:
    """A commit needs a non-empty message; metadata maps strings to strings.

    Raises:
        ValueError: naming the argument and the value received.
    """
    if not isinstance(message, str) or not message.strip():
        raise ValueError(f"`message` must be a non-empty string, got {message!r}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"`metadata` must map strings to strings, got {metadata!r}")


class DataStoreError(Exception):
    """A data-store operation failed; the message names the repository, ref and what to do."""


@dataclass(frozen=True)
class DataVersion:
    """One immutable version of the data: ``(store, repository, commit id)``."""

    store: str
    repository: str
    commit_id: str

    def as_tags(self) -> dict[str, str]:
        """Tags for MLflow runs and model versions (data lineage)."""
        return {
            tags.DATA_STORE: self.store,
            tags.DATA_REPOSITORY: self.repository,
            tags.DATA_COMMIT: self.commit_id,
        }


@dataclass(frozen=True)
class CommitInfo:
    """A commit as :meth:`DataStore.log` reports it."""

    id: str
    message: str
    author: str
    timestamp: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One path that differs between two refs."""

    path: str
    kind: ChangeKind


class DataStore(abc.ABC):
    """A versioned store of dataset folders (``<dataset>/<split>/<label>/<file>``).

    Refs are branch names or commit ids. Implementations do nothing at construction;
    every failure of the backend is re-raised as :class:`DataStoreError`.
    """

    store_name: str
    repository: str

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the repository has been created."""

    @abc.abstractmethod
    def create_repository(self, default_branch: str = "main") -> None:
        """Create the repository; raise :class:`DataStoreError` if it already exists."""

    @abc.abstractmethod
    def list_branches(self) -> list[str]:
        """Names of all branches, sorted."""

    @abc.abstractmethod
    def create_branch(self, name: str, source_ref: str = "main") -> None:
        """Create branch ``name`` at the head of ``source_ref``."""

    @abc.abstractmethod
    def upload(self, branch: str, local_dir: Path, dest_prefix: str = "") -> int:
        """Stage every file under ``local_dir`` at ``dest_prefix`` on ``branch``.

        Returns:
            The number of files staged.
        """

    @abc.abstractmethod
    def commit(self, branch: str, message: str, metadata: dict[str, str] | None = None) -> str:
        """Commit what is staged on ``branch``; returns the new commit id.

        Raises:
            DataStoreError: if nothing is staged.
        """

    @abc.abstractmethod
    def merge(
        self, source_branch: str, destination_branch: str = "main", message: str | None = None
    ) -> str:
        """Merge ``source_branch`` into ``destination_branch``; returns the new head commit id."""

    @abc.abstractmethod
    def diff(self, left_ref: str, right_ref: str) -> list[Change]:
        """Files that differ from ``left_ref`` to ``right_ref``, sorted by path."""

    @abc.abstractmethod
    def log(self, ref: str = "main", limit: int = 20) -> list[CommitInfo]:
        """Commits reachable from ``ref``, newest first, with their metadata."""

    @abc.abstractmethod
    def resolve(self, ref: str) -> str:
        """The full commit id of a branch name or (prefix of a) commit id."""

    @abc.abstractmethod
    def list_files(self, ref: str, prefix: str = "") -> list[str]:
        """Paths of the files at ``ref`` that start with ``prefix``, sorted."""

    @abc.abstractmethod
    def materialize(self, commit_id: str) -> Path:
        """A read-only local copy of ``commit_id``, made once and cached by commit id."""

    def version(self, ref: str) -> DataVersion:
        """Resolve ``ref`` and wrap it as the :class:`DataVersion` that flows pass around."""
        return DataVersion(self.store_name, self.repository, self.resolve(ref))
