"""The embedded data store: a local Oxen repository (package ``oxenai``, import ``oxen``).

The repository's root folder is its working tree and staging area: :meth:`upload` checks
the branch out there, copies files in and stages them; :meth:`commit` commits them. Reads
never touch that working tree. They work on throwaway copies of the ``.oxen`` folder,
because Oxen 0.65's Python API has no read by revision other than ``restore``:

- ``Repo.checkout(<commit id>)`` fails with "Branch '<id>' not found" once a merge exists,
  and leaves a branch named after the id behind; so commits are never checked out.
- ``Repo.log()`` lists only the checked-out branch; other branches are read by writing
  their name into ``HEAD`` of a copy.
- ``Repo.restore(".", source=<commit id>)`` in an empty folder holding a copy of ``.oxen``
  writes exactly that commit's files, before and after merges: this is :meth:`materialize`.
- Copies hold only Oxen's databases; ``[storage] versions_path`` in their ``config.toml``
  points at the repository's version store, which is most of ``.oxen`` (a folder per file).
- Commit ids hash message, author, parents and the time in whole seconds, not the files,
  and are hex without leading zeros (up to 32 characters); see :func:`_commit`.
- ``Repo.merge`` returns ``None`` on a conflict and leaves the merge half-done, with no
  way to abort it; so a merge is tried on a copy first.
- Oxen commits carry only a message: metadata travel as a trailer line
  ``tai-metadata: {json}`` and :meth:`log` strips it again.
- Oxen reads the committer from ``$OXEN_CONFIG_DIR/user_config.toml`` (default
  ``~/.config/oxen``); it is kept inside the repository's ``.oxen`` folder and the variable
  is set only while Oxen is called.
"""

from __future__ import annotations

import fcntl
import filecmp
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.datastore.base import (
    Change,
    CommitInfo,
    DataStore,
    DataStoreError,
    check_commit_arguments,
    clean_prefix,
    upload_plan,
)
from infra.datastore.cache import CommitCache

_METADATA_TRAILER = "tai-metadata: "
# Oxen commit ids are a 128-bit hash in hex *without* leading zeros: up to 32 characters.
_HEX = re.compile(r"[0-9a-f]{4,32}")
# Oxen prints timestamps as e.g. "2026-11-28 7:58:30.888890147 +00:00:00".
_OXEN_TIME = re.compile(
    r"(\d{4}-\d{2}-\d{2}) (\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))? ([+-]\d{1,2}):(\d{2})(?::\d{2})?"
)
_IGNORE_FILE = ".oxenignore"
# One Oxen call at a time per process: they share OXEN_CONFIG_DIR and the working tree.
_OXEN_LOCK = threading.RLock()
# Repositories this process holds the file lock of (see _repository_lock): path -> (depth, fd).
_HELD: dict[Path, tuple[int, int]] = {}


class OxenDataStore(DataStore):
    """A :class:`DataStore` on a local Oxen repository; nothing happens at construction.

    Args:
        root: Folder of the Oxen repository (its working tree; ``.oxen`` lives inside).
        cache_dir: Folder of the commit cache that :meth:`materialize` fills.
        repository: Name of the repository in data versions and cache keys.
        user_name: Committer name Oxen records.
        user_email: Committer e-mail Oxen records.

    Example:
        >>> store = OxenDataStore(tmp / "oxen" / "data", tmp / "cache")  # doctest: +SKIP
        >>> store.create_repository()  # doctest: +SKIP
        >>> store.upload("main", sample_dir)  # doctest: +SKIP
        >>> commit_id = store.commit("main", "MNIST sample", {"seed": "0"})  # doctest: +SKIP
        >>> images = store.materialize(commit_id) / "mnist"  # doctest: +SKIP
    """

    store_name = "oxen"

    def __init__(
        self,
        root: Path,
        cache_dir: Path,
        *,
        repository: str = "data",
        user_name: str = "TAI-MLOps",
        user_email: str = "tai@localhost",
    ) -> None:
        self.root = Path(root).absolute()
        self.repository = repository
        self.user_name = user_name
        self.user_email = user_email
        self._cache = CommitCache(Path(cache_dir))

    # -- repository and branches ------------------------------------------------------

    def exists(self) -> bool:
        return (self.root / ".oxen").is_dir()

    def create_repository(self, default_branch: str = "main") -> None:
        """Create the repository with one commit on ``default_branch``.

        Oxen cannot commit nothing, so the first commit holds an ``.oxenignore`` file.
        """
        if self.exists():
            raise DataStoreError(
                f"an Oxen repository already exists at {self.root}; use it, or choose another "
                "folder for a new one"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        with self._oxen("create the repository", check_exists=False) as repo:
            repo.init()
            self._write_user_config()
            (self.root / _IGNORE_FILE).write_text("# Paths Oxen does not version.\n")
            repo.add(str(self.root / _IGNORE_FILE))
            repo.commit("Repository created")
            if default_branch != "main":
                repo.checkout(default_branch, create=True)
                repo.branch("main", delete=True)

    def list_branches(self) -> list[str]:
        with self._oxen("list branches") as repo:
            return sorted(self._heads(repo))

    def create_branch(self, name: str, source_ref: str = "main") -> None:
        with self._oxen(f"create branch `{name}` from `{source_ref}`") as repo:
            heads = self._heads(repo)
            if name in heads:
                raise DataStoreError(
                    f"branch `{name}` already exists in Oxen repository at {self.root}; "
                    "choose another name"
                )
            if source_ref not in heads:
                raise self._unknown_branch(source_ref, heads)
            self._checkout_clean(repo, source_ref)
            repo.checkout(name, create=True)

    # -- writing ----------------------------------------------------------------------

    def upload(self, branch: str, local_dir: Path, dest_prefix: str = "") -> int:
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise DataStoreError(f"cannot upload {local_dir}: it is not a folder")
        prefix = clean_prefix(dest_prefix, reserved=(".oxen",))
        plan = upload_plan(local_dir, prefix)
        if not plan:
            return 0
        with self._oxen(f"upload {local_dir} to branch `{branch}`") as repo:
            self._checkout_for_write(repo, branch)
            for path, key in plan:
                dest = self.root / key
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
            # Staging the top folders is one Oxen call each instead of one per file.
            for top in sorted({key.split("/")[0] for _, key in plan}):
                repo.add(str(self.root / top))
        return len(plan)

    def commit(self, branch: str, message: str, metadata: dict[str, str] | None = None) -> str:
        full_message = _encode_message(message, metadata or {})
        with self._oxen(f"commit to branch `{branch}`") as repo:
            heads = self._heads(repo)
            if branch not in heads:
                raise self._unknown_branch(branch, heads)
            staged = _staged_paths(repo)
            current = _current_branch(repo)
            if current != branch or not staged:
                where = f" (the staged changes belong to branch `{current}`)" if staged else ""
                raise DataStoreError(
                    f"nothing to commit on branch `{branch}` of Oxen repository at "
                    f"{self.root}{where}; upload files to `{branch}` first"
                )
            return _commit(repo, full_message)

    def merge(
        self, source_branch: str, destination_branch: str = "main", message: str | None = None
    ) -> str:
        """Merge ``source_branch`` into ``destination_branch``.

        Oxen writes its own merge message ("Merge commit <a> into <b>") and fast-forwards
        when it can, so ``message`` is accepted for interface parity but not recorded.
        """
        action = f"merge branch `{source_branch}` into `{destination_branch}`"
        with self._oxen(action) as repo:
            heads = self._heads(repo)
            for name in (source_branch, destination_branch):
                if name not in heads:
                    raise self._unknown_branch(name, heads)
            if source_branch == destination_branch:
                raise DataStoreError(f"cannot merge branch `{source_branch}` into itself")
            self._checkout_clean(repo, destination_branch)
            # A trial on a copy: the copy's working tree is empty, which Oxen's merge accepts.
            with self._copy_of_oxen() as scratch:
                if _open_repo(scratch).merge(source_branch) is None:
                    raise DataStoreError(
                        f"cannot {action} in Oxen repository at {self.root}: both changed the "
                        f"same files; nothing was merged. To combine them, branch from "
                        f"`{destination_branch}`, upload the files as they should be, commit, "
                        "and merge that branch instead"
                    )
            if repo.merge(source_branch) is None:
                raise DataStoreError(f"Oxen reported a conflict for {action} at {self.root}")
            return self._heads(repo)[destination_branch]

    def discard_changes(self) -> None:
        """Drop staged and stray files from the working tree (e.g. after a failed upload)."""
        with self._oxen("discard uncommitted changes") as repo:
            repo.restore(".", staged=True)
            repo.clean(force=True)

    # -- reading ----------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        with self._oxen(f"resolve `{ref}`") as repo:
            return self._resolve(repo, ref)

    def log(self, ref: str = "main", limit: int = 20) -> list[CommitInfo]:
        if limit < 1:
            raise ValueError(f"`limit` must be a positive number of commits, got {limit}")
        with self._oxen(f"read the log of `{ref}`") as repo:
            histories = self._histories(repo)
            commit_id = self._resolve(repo, ref, histories)
        history = next(h for h in histories.values() if any(c.id == commit_id for c in h))
        parents = {c.id: list(c.parent_ids) for c in history}
        ancestors, todo = set(), [commit_id]
        while todo:
            current = todo.pop()
            if current not in ancestors:
                ancestors.add(current)
                todo.extend(parents.get(current, []))
        reachable = [c for c in history if c.id in ancestors]
        return [_commit_info(c) for c in reachable[:limit]]

    def list_files(self, ref: str, prefix: str = "") -> list[str]:
        """Files at ``ref``, read from its materialized commit (Oxen 0.65 cannot list one)."""
        folder = self.materialize(self.resolve(ref))
        return [path for path in _relative_files(folder) if path.startswith(prefix)]

    def diff(self, left_ref: str, right_ref: str) -> list[Change]:
        """Compare the materialized commits byte by byte (Oxen 0.65 has no tree diff)."""
        left = self.materialize(self.resolve(left_ref))
        right = self.materialize(self.resolve(right_ref))
        left_files, right_files = set(_relative_files(left)), set(_relative_files(right))
        changes = [Change(p, "added") for p in right_files - left_files]
        changes += [Change(p, "removed") for p in left_files - right_files]
        changes += [
            Change(p, "modified")
            for p in left_files & right_files
            if not filecmp.cmp(left / p, right / p, shallow=False)
        ]
        return sorted(changes, key=lambda change: change.path)

    def materialize(self, commit_id: str) -> Path:
        if _HEX.fullmatch(commit_id):  # only full ids are ever cached
            cached = self._cache.get(self.store_name, self.repository, commit_id)
            if cached is not None:
                return cached
        with self._oxen(f"read commit `{commit_id}`") as repo:
            if commit_id in self._heads(repo) and not _HEX.fullmatch(commit_id):
                raise DataStoreError(
                    f"materialize takes a commit id, got branch `{commit_id}`; resolve the "
                    f"branch first (store.version('{commit_id}').commit_id)"
                )
            full_id = self._resolve(repo, commit_id)

        def write(dest: Path) -> None:
            with self._oxen(f"read commit `{full_id}`"):
                _copy_oxen_folder(self.root, dest)
                try:
                    _open_repo(dest).restore(".", source=full_id)
                finally:
                    shutil.rmtree(dest / ".oxen")

        return self._cache.fill(
            self.store_name, self.repository, full_id, write, verify=_verify_own_files
        )

    # -- helpers ----------------------------------------------------------------------

    @contextmanager
    def _oxen(self, action: str, *, check_exists: bool = True) -> Iterator[Any]:
        """Open the repository as this store's committer; re-raise Oxen's errors with context.

        Oxen finds the committer through ``OXEN_CONFIG_DIR``, so the variable points into
        the repository's ``.oxen`` folder while Oxen is called (nothing is written to ``~``).
        Arguments are checked before this, so every other exception here is Oxen's.
        """
        if check_exists and not self.exists():
            raise DataStoreError(
                f"no Oxen repository at {self.root}; create it first (`tai data import-sample` "
                "creates it with the MNIST sample, or call create_repository())"
            )
        with _OXEN_LOCK, _repository_lock(self.root), _native_output_silenced():
            previous = os.environ.get("OXEN_CONFIG_DIR")
            os.environ["OXEN_CONFIG_DIR"] = str(self._user_config_dir)
            try:
                if self.exists():
                    self._write_user_config()
                yield _open_repo(self.root)
            except DataStoreError:
                raise
            except Exception as exc:  # Oxen raises ValueError, and bare Exception for paths
                raise DataStoreError(
                    f"Oxen could not {action} in repository at {self.root}: {exc}"
                ) from exc
            finally:
                if previous is None:
                    os.environ.pop("OXEN_CONFIG_DIR", None)
                else:
                    os.environ["OXEN_CONFIG_DIR"] = previous

    @property
    def _user_config_dir(self) -> Path:
        return self.root / ".oxen" / "tai-user"

    def _write_user_config(self) -> None:
        import oxen

        path = self._user_config_dir / "user_config.toml"
        wanted = {"name": self.user_name, "email": self.user_email}
        if path.is_file() and tomllib.loads(path.read_text()) == wanted:
            return
        self._user_config_dir.mkdir(exist_ok=True)
        oxen.user.config_user(self.user_name, self.user_email, str(path))

    def _heads(self, repo: Any) -> dict[str, str]:
        return {branch.name: branch.commit_id for branch in repo.branches()}

    def _unknown_branch(self, name: str, heads: dict[str, str]) -> DataStoreError:
        return DataStoreError(
            f"branch `{name}` not found in Oxen repository at {self.root}; existing branches: "
            f"{', '.join(sorted(heads)) or '(none)'}; create it with `tai data branch {name}`"
        )

    def _checkout_clean(self, repo: Any, branch: str) -> None:
        """Check ``branch`` out, refusing when staged or stray files would be carried over."""
        if not repo.status().is_clean():
            current = _current_branch(repo)
            raise DataStoreError(
                f"Oxen repository at {self.root} has uncommitted changes on branch `{current}`; "
                f"commit them to `{current}` first, or drop them with discard_changes()"
            )
        if _current_branch(repo) != branch:
            repo.checkout(branch)

    def _checkout_for_write(self, repo: Any, branch: str) -> None:
        heads = self._heads(repo)
        if branch not in heads:
            raise self._unknown_branch(branch, heads)
        if _current_branch(repo) != branch:
            self._checkout_clean(repo, branch)

    def _histories(self, repo: Any) -> dict[str, list[Any]]:
        """Each branch's log, newest first, read from a metadata-only copy of ``.oxen``."""
        histories = {}
        with self._copy_of_oxen() as scratch:
            for name in self._heads(repo):
                (scratch / ".oxen" / "HEAD").write_text(name)
                histories[name] = list(_open_repo(scratch).log())
        return histories

    def _resolve(self, repo: Any, ref: str, histories: dict[str, list[Any]] | None = None) -> str:
        heads = self._heads(repo)
        if ref in heads:
            return heads[ref]
        matches: set[str] = set()
        if _HEX.fullmatch(ref):
            histories = self._histories(repo) if histories is None else histories
            ids = {c.id for history in histories.values() for c in history}
            matches = {ref} if ref in ids else {i for i in ids if i.startswith(ref)}
        if len(matches) > 1:
            raise DataStoreError(
                f"commit prefix `{ref}` is ambiguous in Oxen repository at {self.root} "
                f"({', '.join(sorted(matches))}); give more characters"
            )
        if not matches:
            raise DataStoreError(
                f"`{ref}` is neither a branch nor a commit of Oxen repository at {self.root}; "
                f"branches: {', '.join(sorted(heads)) or '(none)'}"
            )
        return matches.pop()

    @contextmanager
    def _copy_of_oxen(self) -> Iterator[Path]:
        """A throwaway folder beside the repository holding a copy of its ``.oxen``."""
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.root.name}-", dir=self.root.parent))
        try:
            _copy_oxen_folder(self.root, scratch)
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _repository_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the repository across processes while Oxen works on it.

    The embedded store is shared by processes (a worker's flow runs, `tai data merge`, the
    webhook): a copy of ``.oxen`` made while another process commits or merges could read
    a RocksDB folder whose files the other compacts away (seen on the integration stack:
    "No such file or directory: .../.oxen/refs/000013.sst"). Reentrant within a process
    (callers hold ``_OXEN_LOCK``, an RLock, so one thread at a time counts the depth).
    """
    root = Path(root).resolve()
    depth, fd = _HELD.get(root, (0, -1))
    if depth == 0:
        root.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(root.parent / f".{root.name}.oxen-lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
    _HELD[root] = (depth + 1, fd)
    try:
        yield
    finally:
        if depth == 0:
            del _HELD[root]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        else:
            _HELD[root] = (depth, fd)


@contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Send what native code writes to the process's stdout and stderr (file descriptors
    1 and 2) to /dev/null meanwhile. Oxen's Rust prints "oxen added N files", commit
    messages and progress bars there: they broke through `tai demo`'s live display and
    into CI logs. What Oxen does is reported by the store's return values and errors.
    Held under ``_OXEN_LOCK``, so calls do not nest; Python output from other threads in
    that window (a live display's refresh) is lost too, and redrawn after."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _open_repo(path: Path) -> Any:
    import oxen

    return oxen.Repo(str(path))


def _commit(repo: Any, message: str) -> str:
    """Commit what is staged; returns the commit id.

    Oxen 0.65 derives a commit id from message, author, parents and the time in whole
    seconds, not from the files: a second commit with the same message on the same parent
    within one second gets the first one's id and is refused ("already exists"), leaving
    the staged files in place. Waiting for the next second gives it a new id.
    """
    for _ in range(2):
        try:
            return repo.commit(message).id
        except ValueError as exc:
            if "already exists" not in str(exc):
                raise
            time.sleep(1.05 - time.time() % 1)
    return repo.commit(message).id


def _current_branch(repo: Any) -> str | None:
    branch = repo.current_branch  # a Branch object, or None before the first commit
    return None if branch is None else branch.name


_COPY_ATTEMPTS = 4  # copies of .oxen tried when files vanish while it is copied


def _copy_oxen_folder(root: Path, dest: Path) -> None:
    """Copy the metadata of ``root/.oxen`` to ``dest/.oxen``, sharing the version store.

    The version files (one folder per file: most of ``.oxen``) are content-addressed and
    only ever added, so the copy reads them in place through ``[storage] versions_path``
    of its ``config.toml``; Oxen's databases are copied because Oxen writes them in place.
    """
    source = root / ".oxen"
    for attempt in range(1, _COPY_ATTEMPTS + 1):
        try:
            shutil.copytree(
                source,
                dest / ".oxen",
                ignore=lambda folder, names: ["versions"] if Path(folder) == source else [],
            )
            break
        except shutil.Error as exc:
            # A process that keeps Oxen's RocksDB open (a worker, the webhook) compacts it
            # in the background, outside the repository lock: a table file listed by the
            # copy was gone when it was read ("No such file or directory: .oxen/refs/
            # 000008.sst", integration stack, 2026-12-04). The next copy lists the tables
            # that replaced it.
            vanished = all("No such file or directory" in str(error[-1]) for error in exc.args[0])
            if not vanished or attempt == _COPY_ATTEMPTS:
                raise
            shutil.rmtree(dest / ".oxen", ignore_errors=True)
            time.sleep(0.05 * attempt)
    config_path = dest / ".oxen" / "config.toml"
    config = config_path.read_text()
    if "versions_path" in tomllib.loads(config).get("storage", {}):
        return  # the repository already keeps its versions elsewhere
    versions = str(source / "versions" / "files")
    line = f"versions_path = {json.dumps(versions)}"  # a JSON string is a TOML basic string
    header = re.compile(r"^\[storage\][ \t]*$", flags=re.MULTILINE)
    if header.search(config):
        config = header.sub(f"[storage]\n{line}", config, count=1)
    else:
        config += f'\n[storage]\nkind = "local"\n{line}\n'
    if tomllib.loads(config).get("storage", {}).get("versions_path") != versions:
        raise DataStoreError(f"could not point the copy of {source} at its version store")
    config_path.write_text(config)


def _verify_own_files(folder: Path) -> None:
    """The cache makes entries read-only: refuse files that share an inode with Oxen's."""
    if (folder / ".oxen").exists():
        raise DataStoreError(f"materialized commit at {folder} still holds an .oxen folder")
    for path in folder.rglob("*"):
        if path.is_file() and path.stat().st_nlink > 1:
            raise DataStoreError(f"materialized file {path} is linked into Oxen's version store")


def _relative_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _staged_paths(repo: Any) -> list[str]:
    status = repo.status()
    return [*status.added_files(), *status.modified_files(), *status.removed_files()]


def _encode_message(message: str, metadata: dict[str, str]) -> str:
    check_commit_arguments(message, metadata)
    if not metadata:
        return message.strip()
    trailer = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
    return f"{message.strip()}\n\n{_METADATA_TRAILER}{trailer}"


def _decode_message(full_message: str) -> tuple[str, dict[str, str]]:
    head, _, last = full_message.rpartition("\n")
    if last.startswith(_METADATA_TRAILER):
        try:
            return head.rstrip(), json.loads(last[len(_METADATA_TRAILER) :])
        except json.JSONDecodeError:
            pass
    return full_message, {}


def _iso_timestamp(oxen_time: str) -> str:
    match = _OXEN_TIME.fullmatch(oxen_time.strip())
    if match is None:
        return oxen_time
    date, hour, minute, second, fraction, offset_hour, offset_minute = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    sign, offset_hour = offset_hour[0], offset_hour[1:].zfill(2)
    return f"{date}T{int(hour):02d}:{minute}:{second}.{micro}{sign}{offset_hour}:{offset_minute}"


def _commit_info(commit: Any) -> CommitInfo:
    message, metadata = _decode_message(commit.message)
    return CommitInfo(
        id=commit.id,
        message=message,
        author=commit.author,
        timestamp=_iso_timestamp(commit.timestamp),
        metadata=metadata,
    )
