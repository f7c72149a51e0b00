"""The production data store: a lakeFS repository, through the ``lakefs`` high-level SDK.

Branches, commits with metadata, merges and diffs are lakeFS's own; :meth:`materialize`
lists a commit's objects once, downloads them in parallel into the :class:`CommitCache`
and checks each one against the checksum lakeFS recorded for it.

What the SDK (``lakefs`` 0.16 on ``lakefs_sdk`` 1.x) does that shapes this adapter:

- ``lakefs.Client(**kwargs)`` reads ``LAKECTL_*`` variables and ``~/.lakectl.yaml`` only
  when it gets *no* keyword at all; one explicit argument drops the rest. So the adapter
  resolves each setting itself (argument, then variable, then lakectl file, as the SDK
  ranks them) and always passes all three.
- ``upload`` and ``reader`` ask the server for the repository and ``/config`` before each
  object unless ``pre_sign`` is given; the adapter passes ``pre_sign=False``, so data go
  through the lakeFS API (no pre-signed object-store URLs) with one request per object.
- Network failures surface as raw ``urllib3`` exceptions, not ``LakeFSException``; they
  become :class:`LakeFSUnavailable`, a ``ConnectionError`` that retry policies retry.
- ``Reference.diff`` is a three-dot diff (against the merge base) unless ``type="two_dot"``.
- lakeFS never fast-forwards: a merge always writes a merge commit, and merging a branch
  with nothing new fails with "no changes".
- The SDK has no default request timeout (``_request_timeout`` reaches only some calls), so
  a server that accepts connections and never answers is waited for.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import yaml

from infra.datastore.base import (
    Change,
    ChangeKind,
    CommitInfo,
    DataStore,
    DataStoreError,
    check_commit_arguments,
    clean_prefix,
    upload_plan,
)
from infra.datastore.cache import CommitCache

_T = TypeVar("_T")

# lakeFS's own rules (RepositoryCreation in the OpenAPI spec).
_REPOSITORY_NAME = re.compile(r"[a-z0-9][a-z0-9-]{2,62}")
_STORAGE_NAMESPACE = re.compile(r"(s3|gs|https?|mem|local|transient)://.*")
# Commit ids are SHA-256 in hex; a ref that is a hex prefix of the id it resolves to is a commit.
_FULL_COMMIT_ID = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{4,64}")
# The checksum lakeFS records for an object written in one part is the MD5 of its bytes;
# multipart uploads record "<md5 of part md5s>-<parts>", which only the size can check.
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
_DIFF_KINDS: dict[str, ChangeKind] = {
    "added": "added",
    "removed": "removed",
    "changed": "modified",
    "conflict": "modified",
}
_PAGE = 1000  # the largest page lakeFS serves

_ENDPOINT_ENV = "LAKECTL_SERVER_ENDPOINT_URL"
_KEY_ENV = "LAKECTL_CREDENTIALS_ACCESS_KEY_ID"
_SECRET_ENV = "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"


class LakeFSUnavailable(DataStoreError, ConnectionError):
    """lakeFS could not be reached, timed out or was overloaded; trying again may work."""


class LakeFSDataStore(DataStore):
    """A :class:`DataStore` on a lakeFS repository; nothing is contacted at construction.

    Args:
        repository: lakeFS repository name (3-63 of ``a-z``, ``0-9``, ``-``).
        cache_dir: Folder of the commit cache that :meth:`materialize` fills.
        endpoint: lakeFS URL, e.g. ``http://lakefs:8000``; default ``$LAKECTL_SERVER_ENDPOINT_URL``
            or ``server.endpoint_url`` of ``~/.lakectl.yaml`` (``$LAKECTL_CONFIG_FILE``).
        access_key_id: Default ``$LAKECTL_CREDENTIALS_ACCESS_KEY_ID`` or the lakectl file.
        secret_access_key: Default ``$LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY`` or the lakectl file.
        storage_namespace: Where :meth:`create_repository` keeps the data, e.g.
            ``s3://bucket/tai/data``; default: the server's default namespace prefix plus the
            repository name.
        max_workers: Parallel uploads and downloads.

    Raises:
        ValueError: If ``repository``, ``storage_namespace`` or ``max_workers`` is malformed.

    Example:
        >>> store = LakeFSDataStore("data", cache, endpoint="http://lakefs:8000")  # doctest: +SKIP
        >>> store.create_branch("new-scans")  # doctest: +SKIP
        >>> store.upload("new-scans", scans_dir, dest_prefix="mnist/train")  # doctest: +SKIP
        >>> store.commit("new-scans", "Scans of May", {"source": "camera-3"})  # doctest: +SKIP
        >>> head = store.merge("new-scans", "main")  # doctest: +SKIP
        >>> images = store.materialize(head) / "mnist"  # doctest: +SKIP
    """

    store_name = "lakefs"

    def __init__(
        self,
        repository: str,
        cache_dir: Path,
        *,
        endpoint: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        storage_namespace: str | None = None,
        max_workers: int = 8,
    ) -> None:
        if not isinstance(repository, str) or not _REPOSITORY_NAME.fullmatch(repository):
            raise ValueError(
                "`repository` must be a lakeFS repository name: 3 to 63 lower-case letters, "
                f"digits or '-', starting with a letter or digit; got {repository!r}"
            )
        if storage_namespace is not None and not _STORAGE_NAMESPACE.fullmatch(storage_namespace):
            raise ValueError(
                "`storage_namespace` must be a URI with scheme s3, gs, http(s), mem, local or "
                f"transient, e.g. 's3://bucket/tai/{repository}'; got {storage_namespace!r}"
            )
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"`max_workers` must be a positive integer, got {max_workers!r}")
        self.repository = repository
        self.storage_namespace = storage_namespace
        self.max_workers = max_workers
        self._cache = CommitCache(Path(cache_dir))
        self._arguments = (endpoint, access_key_id, secret_access_key)
        self._client: Any = None
        self._client_lock = threading.Lock()

    # -- connection -------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The API URL in use (``.../api/v1``); resolving it creates the client."""
        return self._lakefs_client().config.host

    @property
    def access_key_id(self) -> str:
        return self._lakefs_client().config.username

    def _lakefs_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import lakefs

                endpoint, key, secret = _client_settings(*self._arguments)
                self._client = lakefs.Client(host=endpoint, username=key, password=secret)
            return self._client

    def _repo(self) -> Any:
        import lakefs

        return lakefs.Repository(self.repository, client=self._lakefs_client())

    def _ref(self, ref: str) -> Any:
        return self._repo().ref(ref)

    # -- repository and branches ------------------------------------------------------

    def exists(self) -> bool:
        from lakefs.exceptions import NotFoundException

        with self._calling("look up the repository"):
            try:
                self._repo().properties  # noqa: B018 - the property is the request
            except NotFoundException:
                return False
        return True

    def create_repository(self, default_branch: str = "main") -> None:
        """Create the repository with an empty first commit on ``default_branch``."""
        from lakefs.exceptions import ConflictException

        namespace = self.storage_namespace or self._default_namespace()
        with self._calling(f"create repository `{self.repository}` at {namespace}"):
            try:
                self._repo().create(storage_namespace=namespace, default_branch=default_branch)
            except ConflictException:
                raise DataStoreError(
                    f"lakeFS repository `{self.repository}` already exists at {self.endpoint}; "
                    "use it, or choose another repository name"
                ) from None

    def list_branches(self) -> list[str]:
        with self._calling("list branches", not_found=self._explain_missing()):
            return sorted(branch.id for branch in self._repo().branches(amount=_PAGE))

    def create_branch(self, name: str, source_ref: str = "main") -> None:
        from lakefs.exceptions import ConflictException

        action = f"create branch `{name}` from `{source_ref}`"
        with self._calling(action, not_found=self._explain_missing(refs=[source_ref])):
            try:
                self._repo().branch(name).create(source_reference=source_ref)
            except ConflictException:
                raise DataStoreError(
                    f"branch `{name}` already exists in lakeFS repository `{self.repository}` "
                    f"at {self.endpoint}; choose another name"
                ) from None

    # -- writing ----------------------------------------------------------------------

    def upload(self, branch: str, local_dir: Path, dest_prefix: str = "") -> int:
        """Upload every file under ``local_dir``, ``max_workers`` at a time.

        A failure stops the upload; files already sent stay staged on ``branch`` (drop them
        with ``lakectl branch reset``, or commit them).
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise DataStoreError(f"cannot upload {local_dir}: it is not a folder")
        prefix = clean_prefix(dest_prefix)
        plan = upload_plan(local_dir, prefix)
        if not plan:
            return 0
        self._branch_head(branch)  # fail fast, naming the branches that exist
        target = self._repo().branch(branch)

        def put(item: tuple[Path, str]) -> None:
            path, key = item
            with self._calling(f"upload {path} to `{key}` on branch `{branch}`"):
                target.object(key).upload(data=path.read_bytes(), mode="wb", pre_sign=False)

        _run_parallel(put, plan, self.max_workers)
        return len(plan)

    def commit(self, branch: str, message: str, metadata: dict[str, str] | None = None) -> str:
        from lakefs.exceptions import BadRequestException

        check_commit_arguments(message, metadata or {})
        action = f"commit to branch `{branch}`"
        with self._calling(action, not_found=self._explain_missing(branches=[branch])):
            try:
                reference = (
                    self._repo()
                    .branch(branch)
                    .commit(message=message.strip(), metadata=dict(metadata or {}))
                )
            except BadRequestException as exc:
                if "no changes" not in _message(exc):
                    raise
                raise DataStoreError(
                    f"nothing to commit on branch `{branch}` of lakeFS repository "
                    f"`{self.repository}` at {self.endpoint}; upload files to `{branch}` first"
                ) from None
        return reference.id

    def merge(
        self, source_branch: str, destination_branch: str = "main", message: str | None = None
    ) -> str:
        """Merge ``source_branch`` into ``destination_branch``; returns the merge commit.

        lakeFS always writes a merge commit, even where Git would fast-forward.
        """
        from lakefs.exceptions import BadRequestException, ConflictException

        if source_branch == destination_branch:
            raise DataStoreError(f"cannot merge branch `{source_branch}` into itself")
        action = f"merge branch `{source_branch}` into `{destination_branch}`"
        explain = self._explain_missing(branches=[source_branch, destination_branch])
        options = {"message": message} if message else {}
        with self._calling(action, not_found=explain):
            try:
                return self._repo().branch(source_branch).merge_into(destination_branch, **options)
            except ConflictException:
                raise DataStoreError(
                    f"cannot {action} in lakeFS repository `{self.repository}` at "
                    f"{self.endpoint}: both changed the same files; nothing was merged. To "
                    f"combine them, branch from `{destination_branch}`, upload the files as they "
                    "should be, commit, and merge that branch instead"
                ) from None
            except BadRequestException as exc:
                if "no changes" not in _message(exc):
                    raise
                raise DataStoreError(
                    f"nothing to {action} in lakeFS repository `{self.repository}`: "
                    f"`{destination_branch}` already has every commit of `{source_branch}`"
                ) from None

    # -- reading ----------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        with self._calling(f"resolve `{ref}`", not_found=self._explain_missing(refs=[ref])):
            return self._ref(ref).get_commit().id

    def log(self, ref: str = "main", limit: int = 20) -> list[CommitInfo]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"`limit` must be a positive number of commits, got {limit!r}")
        action = f"read the log of `{ref}`"
        with self._calling(action, not_found=self._explain_missing(refs=[ref])):
            commits = list(self._ref(ref).log(max_amount=limit, amount=min(limit, _PAGE)))
        return [_commit_info(commit) for commit in commits]

    def list_files(self, ref: str, prefix: str = "") -> list[str]:
        """Committed files at ``ref``; on a branch, staged uploads are not listed."""
        # lakeFS reads of a branch see its staged objects; "<branch>@" is its committed state.
        committed = ref if _HEX.fullmatch(ref) else f"{ref}@"
        with self._calling(f"list files at `{ref}`", not_found=self._explain_missing(refs=[ref])):
            return sorted(info.path for info in self._objects(committed, prefix))

    def diff(self, left_ref: str, right_ref: str) -> list[Change]:
        """Files that differ between the two commits (a two-dot diff, not from the merge base)."""
        action = f"diff `{left_ref}` and `{right_ref}`"
        explain = self._explain_missing(refs=[left_ref, right_ref])
        with self._calling(action, not_found=explain):
            entries = list(self._ref(left_ref).diff(right_ref, type="two_dot", amount=_PAGE))
        changes = [
            Change(entry.path, _DIFF_KINDS.get(entry.type, "modified"))
            for entry in entries
            if entry.path_type == "object"
        ]
        return sorted(changes, key=lambda change: change.path)

    def materialize(self, commit_id: str) -> Path:
        """Download ``commit_id`` into the cache once; later calls contact nobody.

        Every file is checked against its size and, for objects written in one part, the
        MD5 checksum lakeFS recorded; any mismatch or failure leaves no cache entry.
        """
        if _FULL_COMMIT_ID.fullmatch(commit_id):
            cached = self._cache.get(self.store_name, self.repository, commit_id)
            if cached is not None:
                return cached
        full_id = self.resolve(commit_id)
        if not (_HEX.fullmatch(commit_id) and full_id.startswith(commit_id)):
            raise DataStoreError(
                f"materialize takes a commit id, got `{commit_id}`, which names a branch or tag; "
                f"resolve it first (store.version('{commit_id}').commit_id)"
            )
        return self._cache.fill(
            self.store_name, self.repository, full_id, lambda dest: self._download(full_id, dest)
        )

    # -- helpers ----------------------------------------------------------------------

    def _download(self, commit_id: str, dest: Path) -> None:
        with self._calling(f"list the files of commit `{commit_id}`"):
            objects = list(self._objects(commit_id))
        commit = self._ref(commit_id)

        def fetch(info: Any) -> None:
            target = _target_inside(dest, info.path)
            with self._calling(f"download `{info.path}` of commit `{commit_id}`"):
                with commit.object(info.path).reader(mode="rb", pre_sign=False) as reader:
                    data = reader.read()
            _check_download(info, data, commit_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

        _run_parallel(fetch, objects, self.max_workers)

    def _objects(self, ref: str, prefix: str = "") -> Iterator[Any]:
        listing = self._ref(ref).objects(prefix=prefix or None, amount=_PAGE)
        return (info for info in listing if getattr(info, "path_type", "object") == "object")

    def _branch_head(self, branch: str) -> str:
        action = f"read branch `{branch}`"
        with self._calling(action, not_found=self._explain_missing(branches=[branch])):
            return self._repo().branch(branch).head.id  # GET .../branches/{branch}

    def _default_namespace(self) -> str:
        with self._calling("read the server's storage configuration"):
            prefix = self._lakefs_client().storage_config.default_namespace_prefix
        if not prefix:
            raise DataStoreError(
                f"lakeFS at {self.endpoint} has no default storage namespace; pass "
                f"storage_namespace (e.g. 's3://bucket/tai/{self.repository}') to create "
                f"repository `{self.repository}`"
            )
        return f"{prefix.rstrip('/')}/{self.repository}"

    @contextmanager
    def _calling(
        self, action: str, *, not_found: Callable[[], DataStoreError | None] | None = None
    ) -> Iterator[None]:
        """Re-raise what the SDK, lakeFS or the network raise as :class:`DataStoreError`.

        ``not_found`` explains a 404 (which repository, branch or commit is missing); it
        runs only then, and may return ``None`` to fall back to lakeFS's own message.
        """
        import lakefs_sdk
        import urllib3
        from lakefs.exceptions import LakeFSException, NotFoundException

        try:
            yield
        except DataStoreError:
            raise
        except NotFoundException as exc:
            explained = not_found() if not_found is not None else None
            raise (explained or self._server_error(exc, action)) from exc
        except (LakeFSException, lakefs_sdk.ApiException) as exc:
            raise self._server_error(exc, action) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
                raise  # a local file problem, not lakeFS's
            raise LakeFSUnavailable(
                f"cannot reach lakeFS at {self.endpoint} to {action}: {_reason(exc)}; check "
                f"{_ENDPOINT_ENV} (or the endpoint setting) and that lakeFS is running"
            ) from exc
        except (ValueError, TypeError) as exc:  # the SDK's client-side model validation
            raise DataStoreError(f"the lakeFS SDK could not {action}: {exc}") from exc

    def _server_error(self, exc: Exception, action: str) -> DataStoreError:
        status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
        where = f"lakeFS at {self.endpoint}"
        if status == 401:
            return DataStoreError(
                f"{where} rejected the credentials of access key {self.access_key_id}; check "
                f"{_KEY_ENV} and {_SECRET_ENV} (or the credentials in ~/.lakectl.yaml)"
            )
        if status == 403:
            return DataStoreError(
                f"{where} refused access key {self.access_key_id} permission to {action} in "
                f"repository `{self.repository}` ({_message(exc)}); ask a lakeFS admin for a "
                "policy that allows it"
            )
        if status in _TRANSIENT_STATUS:
            return LakeFSUnavailable(
                f"{where} could not {action} now ({status} {_message(exc)}); try again later"
            )
        return DataStoreError(
            f"{where} could not {action} in repository `{self.repository}`: "
            f"{status} {_message(exc)}"
        )

    def _explain_missing(
        self, *, branches: Iterable[str] = (), refs: Iterable[str] = ()
    ) -> Callable[[], DataStoreError | None]:
        """A 404 explainer: the repository, then each branch, then each ref is looked up."""

        def explain() -> DataStoreError | None:
            from lakefs.exceptions import NotFoundException

            try:
                repo = self._repo()
                try:
                    repo.properties  # noqa: B018 - the property is the request
                except NotFoundException:
                    return self._missing_repository()
                heads = sorted(branch.id for branch in repo.branches(amount=_PAGE))
                for name in branches:
                    if name not in heads:
                        return self._unknown_ref(name, heads, branch=True)
                for ref in refs:
                    if ref in heads:
                        continue
                    try:
                        self._ref(ref).get_commit()
                    except NotFoundException:
                        return self._unknown_ref(ref, heads, branch=not _HEX.fullmatch(ref))
            except Exception:  # a best-effort diagnosis: lakeFS's own message will do
                return None
            return None

        return explain

    def _missing_repository(self) -> DataStoreError:
        return DataStoreError(
            f"repository `{self.repository}` not found at {self.endpoint}; create it with "
            "create_repository() (`tai data import-sample` does), or with "
            f"`lakectl repo create lakefs://{self.repository} <storage namespace>`"
        )

    def _unknown_ref(self, ref: str, heads: list[str], *, branch: bool) -> DataStoreError:
        where = f"lakeFS repository `{self.repository}` at {self.endpoint}"
        names = ", ".join(heads) or "(none)"
        if branch:
            return DataStoreError(
                f"branch `{ref}` not found in {where}; existing branches: {names}; create it "
                f"with `tai data branch {ref}`"
            )
        return DataStoreError(
            f"`{ref}` is neither a branch nor a commit of {where}; branches: {names}"
        )


def _client_settings(
    endpoint: str | None, access_key_id: str | None, secret_access_key: str | None
) -> tuple[str, str, str]:
    """Each setting from its argument, else its ``LAKECTL_*`` variable, else the lakectl file."""
    config_path = Path(os.environ.get("LAKECTL_CONFIG_FILE", Path.home() / ".lakectl.yaml"))
    lakectl: dict[str, Any] = {}
    if config_path.is_file():
        try:
            lakectl = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())  # one line; the parser's spans several
            raise DataStoreError(
                f"lakectl config {config_path} is not valid YAML: {problem}"
            ) from None
    server = lakectl.get("server") or {}
    credentials = lakectl.get("credentials") or {}
    values = {
        "endpoint": endpoint or os.environ.get(_ENDPOINT_ENV) or server.get("endpoint_url"),
        "access_key_id": access_key_id
        or os.environ.get(_KEY_ENV)
        or credentials.get("access_key_id"),
        "secret_access_key": secret_access_key
        or os.environ.get(_SECRET_ENV)
        or credentials.get("secret_access_key"),
    }
    variables = {
        "endpoint": _ENDPOINT_ENV,
        "access_key_id": _KEY_ENV,
        "secret_access_key": _SECRET_ENV,
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise DataStoreError(
            f"lakeFS {' and '.join(missing)} not configured: pass "
            f"{', '.join(f'{name}=' for name in missing)} or set "
            f"{', '.join(variables[name] for name in missing)} (or fill {config_path})"
        )
    return values["endpoint"], values["access_key_id"], values["secret_access_key"]


def _run_parallel(fn: Callable[[_T], None], items: Iterable[_T], max_workers: int) -> None:
    """Call ``fn`` on every item with ``max_workers`` threads; the first error stops the rest.

    At most ``2 * max_workers`` calls are queued at a time, so nothing piles up in memory
    and a failure cancels the queue instead of running through thousands of items.
    """
    with ThreadPoolExecutor(max_workers, thread_name_prefix="lakefs") as pool:
        pending: set[Future[None]] = set()
        try:
            for item in items:
                pending.add(pool.submit(fn, item))
                if len(pending) >= 2 * max_workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _check_download(info: Any, data: bytes, commit_id: str) -> None:
    where = f"`{info.path}` of commit `{commit_id}`"
    if info.size_bytes is not None and len(data) != info.size_bytes:
        raise DataStoreError(
            f"downloaded {where} has {len(data)} bytes, lakeFS recorded {info.size_bytes}; "
            "nothing was cached, try again"
        )
    if _MD5_HEX.fullmatch(info.checksum or ""):
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != info.checksum:
            raise DataStoreError(
                f"checksum mismatch for {where}: lakeFS recorded MD5 {info.checksum}, the "
                f"download has {digest}; nothing was cached, try again"
            )


def _target_inside(dest: Path, path: str) -> Path:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(part in ("..", ".") for part in parts):
        raise DataStoreError(f"lakeFS object path `{path}` would leave the cache folder")
    return dest.joinpath(*parts)


def _commit_info(commit: Any) -> CommitInfo:
    return CommitInfo(
        id=commit.id,
        message=commit.message,
        author=commit.committer,
        timestamp=datetime.fromtimestamp(commit.creation_date, UTC).isoformat(),
        metadata=dict(commit.metadata or {}),
    )


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(getattr(exc, "reason", None) or exc)


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)  # MaxRetryError keeps the underlying error here
    return str(reason or exc)
