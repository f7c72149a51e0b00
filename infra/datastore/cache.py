"""An immutable local cache of data commits, shared by every data-store backend.

An entry is the folder ``<root>/<store>/<repository>/<commit id>``. It appears only
complete: the writer fills a temporary sibling folder, which is verified, made read-only
and then renamed into place with one atomic ``os.rename``. A failed writer leaves neither
an entry nor a temporary folder, and when two processes fill the same key the first rename
wins and the other's copy is discarded.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

_KEY_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


class CommitCache:
    """Immutable folders keyed by ``(store, repository, commit id)``.

    Args:
        root: Folder that holds every entry; created on the first fill.

    Example:
        >>> cache = CommitCache(tmp / "cache")  # doctest: +SKIP
        >>> cache.fill("oxen", "data", commit_id, lambda d: export(commit_id, d))  # doctest: +SKIP
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, store: str, repository: str, commit_id: str) -> Path:
        """Where the entry for this key lives (whether or not it exists yet)."""
        for name, value in (("store", store), ("repository", repository), ("commit_id", commit_id)):
            if not isinstance(value, str) or not _KEY_PART.fullmatch(value):
                raise ValueError(
                    f"cache key part `{name}` must be one path component of letters, digits, "
                    f"'.', '_' or '-' (not starting with '.'), got {value!r}"
                )
        return self.root / store / repository / commit_id

    def get(self, store: str, repository: str, commit_id: str) -> Path | None:
        """The entry's folder if it has been filled, else ``None``."""
        path = self.path_for(store, repository, commit_id)
        return path if path.is_dir() else None

    def fill(
        self,
        store: str,
        repository: str,
        commit_id: str,
        writer: Callable[[Path], None],
        *,
        verify: Callable[[Path], None] | None = None,
    ) -> Path:
        """Create the entry with ``writer`` unless it exists; returns its folder.

        Args:
            store: Backend name, e.g. ``"oxen"``.
            repository: Repository name within the store.
            commit_id: Full commit id.
            writer: Writes the commit's files into the (empty, temporary) folder it is given.
            verify: Optional check of the written folder; raises to reject it.

        Raises:
            Whatever ``writer`` or ``verify`` raise; the temporary folder is removed first.
        """
        final = self.path_for(store, repository, commit_id)
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{commit_id}.", suffix=".tmp", dir=final.parent))
        try:
            writer(tmp)
            if verify is not None:
                verify(tmp)
            _make_read_only(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                # Another process filled the same key first; its copy is as good as ours.
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return final


def _make_read_only(folder: Path) -> None:
    """Drop write permission on every file (folders stay writable so entries can be pruned)."""
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            os.chmod(os.path.join(dirpath, filename), _READ_ONLY)
