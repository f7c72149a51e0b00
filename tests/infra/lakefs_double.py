"""A stateful test double of the lakeFS HTTP API, checked against lakeFS's OpenAPI spec.

A real HTTP server on 127.0.0.1 (werkzeug's threaded server, in a daemon thread) answers
the part of ``/api/v1`` that :class:`~infra.datastore.lakefs_store.LakeFSDataStore` and
the ``lakefs`` SDK use: configuration, repositories, branches, objects (upload, stat, get,
head, list, delete), commits, log, diffs and merges. State lives in memory; a commit is an
immutable snapshot ``path -> entry`` and object bytes are kept once per MD5 checksum.

Every request and every response is validated with ``openapi-core`` against
``shared/lakefs/swagger.yml``. A violation is answered with HTTP 500 that names it and is
appended to :attr:`LakeFSDouble.violations`, so a test ends with
``assert double.violations == []``. Wrong or missing Basic credentials get 401.

Behaviour copied from lakeFS (and relied on by the adapter's tests):

- creating a repository writes a first commit "Repository created" on its default branch;
- reads on a branch see staged objects (``<branch>@`` only its head commit), logs and
  diffs of a branch use its head commit;
- a commit with nothing staged is refused with 400 "commit: no changes";
- a merge always writes a merge commit (parents: destination head, source); it is
  refused with 409 when both sides changed a path since their merge base, with 400 "no
  changes" when it would change nothing, and with 400 when the destination is dirty;
- commit ids are 64 hex characters, and a unique prefix of one resolves to it;
- an object's checksum is the MD5 of its bytes (a one-part upload to S3 or local storage).

What the double does not do is answered with 501 ("the lakeFS double does not implement
..."), never silently ignored: byte ranges, diff delimiters, log filters and so on.

Example:
    >>> with LakeFSDouble() as lakefs:  # doctest: +SKIP
    ...     store = LakeFSDataStore("data", tmp, endpoint=lakefs.endpoint, **lakefs.credentials)
    ...     store.create_repository()
    ...     assert lakefs.violations == []
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import re
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

API_PREFIX = "/api/v1"
SPEC_ENV = "TAI_LAKEFS_SPEC"
_MAX_BODY = 64 * 1024 * 1024
_DEFAULT_AMOUNT = 100
_MAX_AMOUNT = 1000

# (path under /api/v1, method) -> operationId in the spec; handlers are `_<operationId>`.
ROUTES: dict[tuple[str, str], str] = {
    ("/healthcheck", "GET"): "healthCheck",
    ("/config", "GET"): "getConfig",
    ("/config/version", "GET"): "getLakeFSVersion",
    ("/config/storage", "GET"): "getStorageConfig",
    ("/setup_lakefs", "GET"): "getSetupState",
    ("/repositories", "GET"): "listRepositories",
    ("/repositories", "POST"): "createRepository",
    ("/repositories/<repository>", "GET"): "getRepository",
    ("/repositories/<repository>", "DELETE"): "deleteRepository",
    ("/repositories/<repository>/branches", "GET"): "listBranches",
    ("/repositories/<repository>/branches", "POST"): "createBranch",
    ("/repositories/<repository>/branches/<branch>", "GET"): "getBranch",
    ("/repositories/<repository>/branches/<branch>", "DELETE"): "deleteBranch",
    ("/repositories/<repository>/branches/<branch>/objects", "POST"): "uploadObject",
    ("/repositories/<repository>/branches/<branch>/objects", "DELETE"): "deleteObject",
    ("/repositories/<repository>/branches/<branch>/commits", "POST"): "commit",
    ("/repositories/<repository>/branches/<branch>/diff", "GET"): "diffBranch",
    ("/repositories/<repository>/commits/<commitId>", "GET"): "getCommit",
    ("/repositories/<repository>/refs/<ref>/commits", "GET"): "logCommits",
    ("/repositories/<repository>/refs/<ref>/objects", "GET"): "getObject",
    ("/repositories/<repository>/refs/<ref>/objects", "HEAD"): "headObject",
    ("/repositories/<repository>/refs/<ref>/objects/stat", "GET"): "statObject",
    ("/repositories/<repository>/refs/<ref>/objects/ls", "GET"): "listObjects",
    ("/repositories/<repository>/refs/<leftRef>/diff/<rightRef>", "GET"): "diffRefs",
    (
        "/repositories/<repository>/refs/<sourceRef>/merge/<destinationBranch>",
        "POST",
    ): "mergeIntoBranch",
}
# Operations the spec marks `security: []`.
_UNAUTHENTICATED = {"healthCheck", "getSetupState"}


def find_spec() -> Path | None:
    """The lakeFS OpenAPI spec the double is checked against.

    ``$TAI_LAKEFS_SPEC`` when set; else lakeFS's own ``swagger.yml`` in ``shared/lakefs/``
    in or beside the checkout; else the description of the double's routes built from the
    ``lakefs-sdk`` package (:func:`sdk_spec`), which the ``lakefs`` dependency installs, so
    a clean clone checks the double too. None only if none of them exists.
    """
    explicit = os.environ.get(SPEC_ENV)
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    return shared_spec() or sdk_spec()


def shared_spec() -> Path | None:
    """``shared/lakefs/swagger.yml`` in or beside the checkout, if it is there."""
    root = Path(__file__).resolve().parents[2]
    for candidate in (root / "shared", root.parent / "shared"):
        path = candidate / "lakefs" / "swagger.yml"
        if path.is_file():
            return path
    return None


@functools.cache
def load_openapi(path: Path) -> Any:
    """The spec as an openapi-core ``OpenAPI`` object (parsed once per process).

    YAML reads response codes such as ``200:`` as integers; a JSON round trip makes them
    the strings OpenAPI requires. The spec itself is not re-validated (it is lakeFS's).
    """
    from openapi_core import Config, OpenAPI

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = json.loads(json.dumps(yaml.load(path.read_text(), Loader=loader), default=str))
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))


class _Problem(Exception):
    """An error reply: ``status`` with an ``Error`` body ``{"message": ...}``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, **extra}


@dataclass(frozen=True)
class _Entry:
    checksum: str
    size: int
    mtime: int
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Commit:
    id: str
    parents: tuple[str, ...]
    committer: str
    message: str
    creation_date: int
    metadata: Mapping[str, str]
    tree: Mapping[str, _Entry]
    sequence: int


@dataclass
class _Branch:
    head: str
    staging: dict[str, _Entry | None] = field(default_factory=dict)  # None: deleted
    hidden: bool = False


@dataclass
class _Repository:
    id: str
    creation_date: int
    default_branch: str
    storage_namespace: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, _Branch] = field(default_factory=dict)


@dataclass
class _Reply:
    status: int
    json: Any = None
    data: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class LakeFSDouble:
    """An in-memory lakeFS on ``127.0.0.1`` that checks both sides of every exchange.

    Args:
        access_key_id: The only access key accepted (Basic auth user).
        secret_access_key: Its secret.
        user_id: The committer recorded on commits.
        validate: Check requests and responses against the spec (off only for benchmarks).
        spec: Path of the OpenAPI spec; default :func:`find_spec`.
        max_lifetime_s: The server stops itself after this long, whatever the test does;
            request bodies are capped at 64 MiB.

    Attributes:
        violations: Spec violations and double crashes, one message each.
        requests: ``(method, operationId)`` of every request answered, in order.
    """

    def __init__(
        self,
        *,
        access_key_id: str = "AKIAIOSFODNN7EXAMPLE",
        secret_access_key: str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        user_id: str = "admin",
        validate: bool = True,
        spec: Path | None = None,
        max_lifetime_s: float = 600.0,
    ) -> None:
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.user_id = user_id
        self.validate = validate
        self.max_lifetime_s = max_lifetime_s
        spec = spec or find_spec()
        if validate and spec is None:
            raise FileNotFoundError(
                f"lakeFS OpenAPI spec not found; set {SPEC_ENV} or put it at shared/lakefs/"
            )
        self._openapi = load_openapi(spec) if validate else None
        self.violations: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self._repositories: dict[str, _Repository] = {}
        self._blobs: dict[str, bytes] = {}
        self._corrupt: set[str] = set()
        self._faults: dict[str, list[tuple[int, str]]] = {}
        self._sequence = itertools.count(1)
        self._lock = threading.RLock()
        self._validation_lock = threading.Lock()
        self._url_map = Map(
            [Rule(API_PREFIX + path, endpoint=path, methods=[m]) for path, m in ROUTES]
        )
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> LakeFSDouble:
        self._server = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # how long shutdown() may wait
            name="lakefs-double",
            daemon=True,
        )
        self._thread.start()
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving; idempotent. Kept-alive connections get 503 from then on."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> LakeFSDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """Base URL without ``/api/v1`` (the SDK appends it)."""
        if self._server is None:
            raise RuntimeError("the lakeFS double is not running; call start() first")
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def credentials(self) -> dict[str, str]:
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}

    # -- test controls ------------------------------------------------------------------

    def count(self, operation_id: str | None = None) -> int:
        """Requests answered so far, of one operation or of all."""
        with self._lock:
            return sum(1 for _, op in self.requests if operation_id in (None, op))

    def corrupt_downloads(self, *paths: str) -> None:
        """From now on, ``getObject`` of these paths flips the last byte of the content."""
        with self._lock:
            self._corrupt.update(paths)

    def fail_next(
        self, operation_id: str, status: int, message: str = "injected", times: int = 1
    ) -> None:
        """Answer the next ``times`` calls of ``operation_id`` with ``status`` and an Error."""
        with self._lock:
            self._faults.setdefault(operation_id, []).extend([(status, message)] * times)

    # -- WSGI plumbing ------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        request.max_content_length = _MAX_BODY
        response = self._answer(request)
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        if self._stopped:
            return _json_response(503, {"message": "the lakeFS double has stopped"})
        try:
            path, args = self._url_map.bind_to_environ(request.environ).match(method=request.method)
        except HTTPException as exc:
            message = f"{request.method} {request.path} is not an operation the double serves"
            self._violation(f"{message} ({exc.code})")
            return _json_response(500, {"message": message})
        operation_id = ROUTES[(path, request.method)]
        request.get_data()  # read the body now, outside the state lock (werkzeug caches it)
        with self._lock:
            self.requests.append((request.method, operation_id))
        if operation_id not in _UNAUTHENTICATED and not self._authenticated(request):
            reply = _Reply(401, {"message": "error authenticating request"})
        else:
            problem = self._check_request(request, operation_id)
            if problem:
                return _json_response(500, {"message": problem})
            reply = self._dispatch(operation_id, request, args)
        response = _to_response(reply)
        problem = self._check_response(request, response, operation_id)
        return _json_response(500, {"message": problem}) if problem else response

    def _authenticated(self, request: Request) -> bool:
        auth = request.authorization
        return (
            auth is not None
            and auth.type == "basic"
            and auth.username == self.access_key_id
            and auth.password == self.secret_access_key
        )

    def _dispatch(self, operation_id: str, request: Request, args: dict[str, str]) -> _Reply:
        handler = getattr(self, f"_{operation_id}")
        try:
            with self._lock:
                faults = self._faults.get(operation_id)
                if faults:
                    status, message = faults.pop(0)
                    raise _Problem(status, message)
                return handler(request, **args)
        except _Problem as problem:
            return _Reply(problem.status, problem.body)
        except Exception:  # a bug in the double: loud, and recorded like a violation
            message = f"the lakeFS double crashed in {operation_id}: {traceback.format_exc()}"
            self._violation(message)
            return _Reply(500, {"message": message})

    def _check_request(self, request: Request, operation_id: str) -> str | None:
        if self._openapi is None:
            return None
        from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest

        with self._validation_lock:
            try:
                self._openapi.validate_request(WerkzeugOpenAPIRequest(request))
            except Exception as exc:
                return self._violation(
                    f"request {request.method} {request.full_path} ({operation_id}) violates "
                    f"the lakeFS spec: {_describe(exc)}"
                )
        return None

    def _check_response(self, request: Request, response: Response, operation_id: str):
        if self._openapi is None:
            return None
        from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse

        with self._validation_lock:
            try:
                self._openapi.validate_response(
                    WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response)
                )
            except Exception as exc:
                return self._violation(
                    f"response {response.status_code} to {request.method} {request.full_path} "
                    f"({operation_id}) violates the lakeFS spec: {_describe(exc)}"
                )
        return None

    def _violation(self, message: str) -> str:
        with self._lock:
            self.violations.append(message)
        return message

    # -- configuration ------------------------------------------------------------------

    def _healthCheck(self, request: Request) -> _Reply:
        return _Reply(204)

    def _getConfig(self, request: Request) -> _Reply:
        return _Reply(200, {"storage_config": _STORAGE, "version_config": _VERSION})

    def _getLakeFSVersion(self, request: Request) -> _Reply:
        return _Reply(200, _VERSION)

    def _getStorageConfig(self, request: Request) -> _Reply:
        return _Reply(200, _STORAGE)

    def _getSetupState(self, request: Request) -> _Reply:
        return _Reply(200, {"state": "initialized", "comm_prefs_missing": False})

    # -- repositories -------------------------------------------------------------------

    def _listRepositories(self, request: Request) -> _Reply:
        _refuse(request, "search")
        repos = [self._repository_json(r) for _, r in sorted(self._repositories.items())]
        return _page(request, repos, key=lambda item: item["id"])

    def _createRepository(self, request: Request) -> _Reply:
        body = request.get_json()
        name = body["name"]
        if name in self._repositories:
            raise _Problem(409, f"repository {name} already exists")
        if body.get("sample_data") or body.get("read_only") or body.get("storage_id"):
            raise _Problem(
                501,
                "the lakeFS double does not implement sample data, read-only "
                "repositories or storage ids",
            )
        default = body.get("default_branch") or "main"
        repo = _Repository(name, int(time.time()), default, body["storage_namespace"])
        if request.args.get("bare", "false") != "true":
            first = self._new_commit(repo, (), "Repository created", {}, {}, committer="")
            repo.branches[default] = _Branch(first.id)
        self._repositories[name] = repo
        return _Reply(201, self._repository_json(repo))

    def _getRepository(self, request: Request, repository: str) -> _Reply:
        return _Reply(200, self._repository_json(self._repo(repository)))

    def _deleteRepository(self, request: Request, repository: str) -> _Reply:
        self._repo(repository)
        del self._repositories[repository]
        return _Reply(204)

    # -- branches -----------------------------------------------------------------------

    def _listBranches(self, request: Request, repository: str) -> _Reply:
        repo = self._repo(repository)
        show_hidden = request.args.get("show_hidden") == "true"
        refs = [
            {"id": name, "commit_id": branch.head}
            for name, branch in sorted(repo.branches.items())
            if show_hidden or not branch.hidden
        ]
        return _page(request, refs, key=lambda item: item["id"])

    def _createBranch(self, request: Request, repository: str) -> _Reply:
        repo = self._repo(repository)
        body = request.get_json()
        name, source = body["name"], body["source"]
        if (
            not name
            or not (name[0].isalnum() or name[0] == "_")
            or not all(c.isalnum() or c in "-_" for c in name)
        ):
            raise _Problem(400, f"branch name {name!r}: invalid value: validation error")
        if name in repo.branches and not body.get("force"):
            raise _Problem(409, f"branch {name} already exists")
        commit = self._resolve(repo, source)
        repo.branches[name] = _Branch(commit.id, hidden=bool(body.get("hidden")))
        return _Reply(201, data=commit.id.encode(), content_type="text/html")

    def _getBranch(self, request: Request, repository: str, branch: str) -> _Reply:
        found = self._branch(self._repo(repository), branch)
        return _Reply(200, {"id": branch, "commit_id": found.head})

    def _deleteBranch(self, request: Request, repository: str, branch: str) -> _Reply:
        repo = self._repo(repository)
        self._branch(repo, branch)
        if branch == repo.default_branch:
            raise _Problem(403, f"cannot delete the default branch {branch}")
        del repo.branches[branch]
        return _Reply(204)

    # -- objects ------------------------------------------------------------------------

    def _uploadObject(self, request: Request, repository: str, branch: str) -> _Reply:
        repo = self._repo(repository)
        target = self._branch(repo, branch)
        path = request.args["path"]
        _refuse(request, "If-Match", "storageClass")
        if request.mimetype == "multipart/form-data":
            upload = request.files.get("content")
            if upload is None:
                raise _Problem(400, "multipart upload must hold one file named 'content'")
            data, content_type = upload.read(), upload.mimetype or "application/octet-stream"
        else:
            data, content_type = request.get_data(), request.mimetype or "application/octet-stream"
        if request.headers.get("If-None-Match") == "*" and self._exists(repo, branch, path):
            raise _Problem(412, "object already exists")
        checksum = hashlib.md5(data, usedforsecurity=False).hexdigest()
        self._blobs.setdefault(checksum, data)
        # WSGI loses the case of header names; the keys come back lower-case.
        metadata = {
            key[len("x-lakefs-meta-") :].lower(): value
            for key, value in request.headers.items()
            if key.lower().startswith("x-lakefs-meta-")
        }
        entry = _Entry(checksum, len(data), int(time.time()), content_type, metadata)
        target.staging[path] = entry
        return _Reply(201, self._stats_json(repo, path, entry))

    def _deleteObject(self, request: Request, repository: str, branch: str) -> _Reply:
        repo = self._repo(repository)
        target = self._branch(repo, branch)
        target.staging[request.args["path"]] = None
        return _Reply(204)

    def _statObject(self, request: Request, repository: str, ref: str) -> _Reply:
        _refuse_presign(request)
        repo = self._repo(repository)
        path = request.args["path"]
        return _Reply(200, self._stats_json(repo, path, self._entry(repo, ref, path)))

    def _headObject(self, request: Request, repository: str, ref: str) -> _Reply:
        repo = self._repo(repository)
        try:
            entry = self._entry(repo, ref, request.args["path"])
        except _Problem:
            return _Reply(404)  # the spec gives HEAD's 404 no body
        return _Reply(200, headers=_object_headers(entry))

    def _getObject(self, request: Request, repository: str, ref: str) -> _Reply:
        _refuse(request, "Range", "If-None-Match")
        _refuse_presign(request)
        repo = self._repo(repository)
        path = request.args["path"]
        entry = self._entry(repo, ref, path)
        data = self._blobs[entry.checksum]
        if path in self._corrupt and data:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return _Reply(
            200,
            data=data,
            headers=_object_headers(entry),
            content_type="application/octet-stream",
        )

    def _listObjects(self, request: Request, repository: str, ref: str) -> _Reply:
        _refuse_presign(request)
        repo = self._repo(repository)
        view = self._view(repo, ref)
        prefix = request.args.get("prefix", "")
        delimiter = request.args.get("delimiter", "")
        items: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in view if p.startswith(prefix)):
            rest = path[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                items.setdefault(common, _common_prefix_json(common))
            else:
                items[path] = self._stats_json(repo, path, view[path])
        return _page(request, list(items.values()), key=lambda item: item["path"])

    # -- commits ------------------------------------------------------------------------

    def _commit(self, request: Request, repository: str, branch: str) -> _Reply:
        _refuse(request, "source_metarange")
        repo = self._repo(repository)
        target = self._branch(repo, branch)
        body = request.get_json()
        if not target.staging and not body.get("allow_empty"):
            raise _Problem(400, "commit: no changes")
        tree = self._view(repo, branch)
        commit = self._new_commit(
            repo,
            (target.head,),
            body["message"],
            body.get("metadata") or {},
            tree,
            date=body.get("date"),
        )
        target.head, target.staging = commit.id, {}
        return _Reply(201, _commit_json(commit))

    def _getCommit(self, request: Request, repository: str, commitId: str) -> _Reply:  # noqa: N803
        return _Reply(200, _commit_json(self._resolve(self._repo(repository), commitId)))

    def _logCommits(self, request: Request, repository: str, ref: str) -> _Reply:
        _refuse(request, "objects", "prefixes", "since", "stop_at", "limit")
        repo = self._repo(repository)
        head = self._resolve(repo, ref)
        first_parent = request.args.get("first_parent") == "true"
        reachable = self._ancestors(repo, head.id, first_parent=first_parent)
        commits = sorted((repo.commits[c] for c in reachable), key=lambda c: -c.sequence)
        ids = [c.id for c in commits]
        after = request.args.get("after", "")
        start = ids.index(after) + 1 if after in ids else 0
        return _page(request, [_commit_json(c) for c in commits[start:]], key=None)

    def _diffBranch(self, request: Request, repository: str, branch: str) -> _Reply:
        _refuse(request, "delimiter")
        repo = self._repo(repository)
        target = self._branch(repo, branch)
        left = repo.commits[target.head].tree
        return self._diff_reply(request, left, self._view(repo, branch))

    def _diffRefs(self, request: Request, repository: str, leftRef: str, rightRef: str):  # noqa: N803
        _refuse(request, "delimiter")
        if request.args.get("include_right_stats") == "true":
            raise _Problem(501, "the lakeFS double does not implement include_right_stats")
        repo = self._repo(repository)
        left, right = self._resolve(repo, leftRef), self._resolve(repo, rightRef)
        if request.args.get("type", "three_dot") == "three_dot":
            left = self._merge_base(repo, left.id, right.id) or left
        return self._diff_reply(request, left.tree, right.tree)

    def _mergeIntoBranch(
        self,
        request: Request,
        repository: str,
        sourceRef: str,  # noqa: N803
        destinationBranch: str,  # noqa: N803
    ) -> _Reply:
        repo = self._repo(repository)
        destination = self._branch(repo, destinationBranch)
        source = self._resolve(repo, sourceRef)
        body = request.get_json(silent=True) or {}
        if destination.staging:
            raise _Problem(400, f"{destinationBranch}: can't apply operation on a dirty branch")
        strategy = body.get("strategy") or ""
        if strategy not in ("", "dest-wins", "source-wins"):
            raise _Problem(400, f"merge strategy {strategy!r}: invalid value")
        ours = repo.commits[destination.head]
        if source.id == ours.id:
            raise _Problem(400, "same branch validation error: no changes")
        base = self._merge_base(repo, ours.id, source.id)
        tree, conflicts = _three_way(base.tree if base else {}, ours.tree, source.tree, strategy)
        if conflicts:
            return _Reply(409, {"message": "conflict found", "reference": ""})
        allow_empty = body.get("allow_empty") or body.get("force")
        if (tree == dict(ours.tree) or source.id in self._ancestors(repo, ours.id)) and not (
            allow_empty
        ):
            raise _Problem(400, "no changes")
        parents = (ours.id,) if body.get("squash_merge") else (ours.id, source.id)
        message = body.get("message") or f"Merge '{sourceRef}' into '{destinationBranch}'"
        commit = self._new_commit(repo, parents, message, body.get("metadata") or {}, tree)
        destination.head = commit.id
        return _Reply(200, {"reference": commit.id})

    # -- state helpers ------------------------------------------------------------------

    def _repo(self, name: str) -> _Repository:
        repo = self._repositories.get(name)
        if repo is None:
            raise _Problem(404, "repository not found")
        return repo

    def _branch(self, repo: _Repository, name: str) -> _Branch:
        branch = repo.branches.get(name)
        if branch is None:
            raise _Problem(404, "branch not found")
        return branch

    def _resolve(self, repo: _Repository, ref: str) -> _Commit:
        """A branch (its head commit), a commit id, or a unique prefix of one.

        A trailing ``@`` (lakeFS: "committed state only") is accepted on any of them.
        """
        ref = ref.removesuffix("@")
        if ref in repo.branches:
            return repo.commits[repo.branches[ref].head]
        if ref in repo.commits:
            return repo.commits[ref]
        matches = [c for c in repo.commits if len(ref) >= 4 and c.startswith(ref)]
        if len(matches) == 1:
            return repo.commits[matches[0]]
        raise _Problem(404, f"{ref}: not found")

    def _view(self, repo: _Repository, ref: str) -> dict[str, _Entry]:
        """What a read of ``ref`` sees: a branch's staged objects over its head commit."""
        tree = dict(self._resolve(repo, ref).tree)
        branch = repo.branches.get(ref)  # None for "<branch>@": committed state only
        for path, entry in (branch.staging if branch else {}).items():
            if entry is None:
                tree.pop(path, None)
            else:
                tree[path] = entry
        return tree

    def _entry(self, repo: _Repository, ref: str, path: str) -> _Entry:
        """One path of :meth:`_view`, without copying the tree (reads are the hot path)."""
        branch = repo.branches.get(ref)
        if branch is not None and path in branch.staging:
            entry = branch.staging[path]
        else:
            entry = self._resolve(repo, ref).tree.get(path)
        if entry is None:
            raise _Problem(404, "object not found")
        return entry

    def _exists(self, repo: _Repository, ref: str, path: str) -> bool:
        try:
            self._entry(repo, ref, path)
        except _Problem:
            return False
        return True

    def _new_commit(
        self,
        repo: _Repository,
        parents: tuple[str, ...],
        message: str,
        metadata: Mapping[str, str],
        tree: Mapping[str, _Entry],
        *,
        committer: str | None = None,
        date: int | None = None,
    ) -> _Commit:
        sequence = next(self._sequence)
        digest = hashlib.sha256(
            json.dumps(
                [
                    repo.id,
                    parents,
                    message,
                    dict(metadata),
                    sorted((p, e.checksum) for p, e in tree.items()),
                    sequence,
                ]
            ).encode()
        ).hexdigest()
        commit = _Commit(
            id=digest,
            parents=parents,
            committer=self.user_id if committer is None else committer,
            message=message,
            creation_date=int(time.time()) if date is None else int(date),
            metadata=MappingProxyType(dict(metadata)),
            tree=MappingProxyType(dict(tree)),
            sequence=sequence,
        )
        repo.commits[commit.id] = commit
        return commit

    def _ancestors(self, repo: _Repository, start: str, *, first_parent: bool = False) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                parents = repo.commits[current].parents
                todo.extend(parents[:1] if first_parent else parents)
        return seen

    def _merge_base(self, repo: _Repository, left: str, right: str) -> _Commit | None:
        common = self._ancestors(repo, left) & self._ancestors(repo, right)
        best = [
            c
            for c in common
            if not any(c != other and c in self._ancestors(repo, other) for other in common)
        ]
        return max((repo.commits[c] for c in best), key=lambda c: c.sequence, default=None)

    def _diff_reply(
        self, request: Request, left: Mapping[str, _Entry], right: Mapping[str, _Entry]
    ) -> _Reply:
        prefix = request.args.get("prefix", "")
        diffs = []
        for path in sorted(set(left) | set(right)):
            if not path.startswith(prefix):
                continue
            before, after = left.get(path), right.get(path)
            if before == after or (before and after and before.checksum == after.checksum):
                continue
            kind = "added" if before is None else "removed" if after is None else "changed"
            size = (after or before).size
            diffs.append({"type": kind, "path": path, "path_type": "object", "size_bytes": size})
        return _page(request, diffs, key=lambda item: item["path"])

    def _repository_json(self, repo: _Repository) -> dict[str, Any]:
        return {
            "id": repo.id,
            "creation_date": repo.creation_date,
            "default_branch": repo.default_branch,
            "storage_namespace": repo.storage_namespace,
            "read_only": False,
        }

    def _stats_json(self, repo: _Repository, path: str, entry: _Entry) -> dict[str, Any]:
        return {
            "path": path,
            "path_type": "object",
            "physical_address": f"{repo.storage_namespace.rstrip('/')}/data/{entry.checksum}",
            "checksum": entry.checksum,
            "size_bytes": entry.size,
            "mtime": entry.mtime,
            "metadata": dict(entry.metadata),
            "content_type": entry.content_type,
        }


_STORAGE = {
    "blockstore_type": "mem",
    "blockstore_namespace_example": "mem://example-bucket/",
    "blockstore_namespace_ValidityRegex": "^mem://",
    "default_namespace_prefix": "mem://tai-double",
    "pre_sign_support": False,
    "pre_sign_support_ui": False,
    "import_support": False,
    "import_validity_regex": "^mem://",
}
_VERSION = {"version": "1.0.0-tai-double"}


def _three_way(
    base: Mapping[str, _Entry],
    ours: Mapping[str, _Entry],
    theirs: Mapping[str, _Entry],
    strategy: str,
) -> tuple[dict[str, _Entry], list[str]]:
    """Merge ``theirs`` into ``ours``: a path changed on one side takes that side's version."""

    def same(a: _Entry | None, b: _Entry | None) -> bool:
        return (a is None and b is None) or (
            a is not None and b is not None and a.checksum == b.checksum
        )

    merged, conflicts = dict(ours), []
    for path in set(base) | set(ours) | set(theirs):
        b, o, t = base.get(path), ours.get(path), theirs.get(path)
        if same(o, t) or same(t, b):
            continue
        if not same(o, b) and strategy != "source-wins":
            if strategy != "dest-wins":
                conflicts.append(path)
            continue
        if t is None:
            merged.pop(path, None)
        else:
            merged[path] = t
    return merged, sorted(conflicts)


def _refuse(request: Request, *names: str) -> None:
    """501 for parameters the double does not implement, rather than ignoring them."""
    for name in names:
        if name in request.args or name in request.headers:
            raise _Problem(501, f"the lakeFS double does not implement `{name}`")


def _refuse_presign(request: Request) -> None:
    if request.args.get("presign") == "true":
        raise _Problem(501, "the lakeFS double does not implement pre-signed URLs")


def _page(request: Request, items: list[dict[str, Any]], key: Callable | None) -> _Reply:
    """One page of ``items`` after ``?after=`` (by ``key``; ``None``: already cut)."""
    try:
        amount = int(request.args.get("amount", _DEFAULT_AMOUNT))
    except ValueError:
        raise _Problem(400, "amount: invalid value") from None
    amount = _DEFAULT_AMOUNT if amount < 0 else min(amount, _MAX_AMOUNT)
    after = request.args.get("after", "")
    if key is not None and after:
        items = [item for item in items if key(item) > after]
    if key is not None and "prefix" in request.args and request.args["prefix"]:
        items = [item for item in items if key(item).startswith(request.args["prefix"])]
    results, more = items[:amount], len(items) > amount
    last = results[-1] if results else None
    next_offset = "" if last is None else (key(last) if key else last["id"])
    pagination = {
        "has_more": more,
        "next_offset": next_offset if more else "",
        "results": len(results),
        "max_per_page": _MAX_AMOUNT,
    }
    return _Reply(200, {"pagination": pagination, "results": results})


def _commit_json(commit: _Commit) -> dict[str, Any]:
    return {
        "id": commit.id,
        "parents": list(commit.parents),
        "committer": commit.committer,
        "message": commit.message,
        "creation_date": commit.creation_date,
        "meta_range_id": hashlib.sha256(
            json.dumps(sorted((p, e.checksum) for p, e in commit.tree.items())).encode()
        ).hexdigest(),
        "metadata": dict(commit.metadata),
        "generation": commit.sequence,
        "version": 1,
    }


def _common_prefix_json(path: str) -> dict[str, Any]:
    return {
        "path": path,
        "path_type": "common_prefix",
        "physical_address": "",
        "checksum": "",
        "mtime": 0,
    }


def _object_headers(entry: _Entry) -> dict[str, str]:
    return {
        "ETag": f'"{entry.checksum}"',
        "Last-Modified": formatdate(entry.mtime, usegmt=True),
        "Content-Length": str(entry.size),
    }


def _to_response(reply: _Reply) -> Response:
    if reply.json is not None:
        response = _json_response(reply.status, reply.json)
    else:
        response = Response(reply.data or b"", status=reply.status, content_type=reply.content_type)
        if reply.data is None:
            response.headers.remove("Content-Type")
    for name, value in reply.headers.items():
        response.headers[name] = value  # werkzeug sends no body to HEAD, keeps the headers
    return response


def _json_response(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _describe(exc: BaseException) -> str:
    """The exception and its causes (openapi-core keeps the schema errors there)."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = f"{type(current).__name__}: {current}"
        for error in getattr(current, "schema_errors", None) or ():
            text += f" [{getattr(error, 'message', error)}]"
        parts.append(text)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


# -- the spec from lakefs-sdk ----------------------------------------------------------------
# lakeFS's Python client (package lakefs-sdk, which the `lakefs` dependency installs) is
# generated from the same swagger.yml: each operation's `<operation>_with_http_info` names
# its path, method, query, header and form parameters, request and response content types,
# authentication and the model of each response, and each model is a pydantic (v1) class
# whose schema, with the patterns and enums its validators check, is the spec's schema.
# The client leaves out the `default: ServerError` answer that swagger.yml gives all but a
# few configuration operations; it is put back on every operation whose answers the client
# reads. Response headers are not described (the client does not know them), nor the
# statuses of the five operations whose answer the client never reads (healthCheck, the
# three deletes, headObject): any status passes there, without a body check.


def sdk_spec() -> Path | None:
    """An OpenAPI 3.0 document of the double's routes built from ``lakefs-sdk``, written once
    to the temporary folder; None if the SDK is not installed."""
    try:
        document = sdk_openapi()
    except ImportError:
        return None
    text = json.dumps(document, sort_keys=True, indent=1)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"tai-lakefs-sdk-openapi-{digest}.json"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


@functools.cache
def sdk_openapi() -> dict[str, Any]:
    """The OpenAPI document (a dict) of every operation in :data:`ROUTES`, from lakefs-sdk.

    Raises:
        ImportError: lakefs-sdk is not installed.
        ValueError: the SDK places an operation at another path or method than the double.
    """
    import lakefs_sdk

    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for (route, method), operation_id in ROUTES.items():
        op = _sdk_operation(operation_id)
        expected = route.replace("<", "{").replace(">", "}")
        if (op["path"], op["method"]) != (expected, method):
            raise ValueError(
                f"lakefs-sdk {lakefs_sdk.__version__} has {operation_id} at {op['method']} "
                f"{op['path']}, the double serves it at {method} {expected}"
            )
        paths.setdefault(expected, {})[method.lower()] = _sdk_operation_object(
            operation_id, op, schemas
        )
    return {
        "openapi": "3.0.3",
        "info": {"title": "lakeFS API (from lakefs-sdk)", "version": lakefs_sdk.__version__},
        "servers": [{"url": API_PREFIX}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": _sdk_security_schemes()},
    }


def _sdk_operation(operation_id: str) -> dict[str, Any]:
    """What the SDK's ``<operation>_with_http_info`` sends and expects, read from its code."""
    import ast
    import importlib
    import inspect
    import pkgutil
    import re
    import textwrap
    import typing

    import lakefs_sdk.api

    name = re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()
    name = {"get_lake_f_s_version": "get_lake_fs_version"}.get(name, name)
    for info in pkgutil.iter_modules(lakefs_sdk.api.__path__):
        module = importlib.import_module(f"lakefs_sdk.api.{info.name}")
        for cls in vars(module).values():
            function = getattr(cls, f"{name}_with_http_info", None)
            if isinstance(cls, type) and function is not None:
                break
        else:
            continue
        break
    else:
        raise ValueError(f"lakefs-sdk has no operation {operation_id} ({name})")
    raw = getattr(function, "raw_function", function)
    tree = ast.parse(textwrap.dedent(inspect.getsource(raw)))
    op: dict[str, Any] = {
        "query": [],
        "header": [],
        "path_params": {},
        "files": [],
        "form": [],
        "body": None,
        "content_types": [],
        "accept": [],
        "auth": [],
        "responses": {},
        "hints": typing.get_type_hints(raw, include_extras=True),
        "signature": inspect.signature(raw),
    }

    def param(node: ast.AST) -> str | None:  # `_params['x']` -> "x"
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            if node.value.id == "_params" and isinstance(node.slice, ast.Constant):
                return node.slice.value
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, args = node.func.attr, node.args
            if attr == "call_api":
                op["path"], op["method"] = args[0].value, args[1].value
            elif attr == "append" and isinstance(node.func.value, ast.Name) and args:
                # ('name', _params['x']), or a conversion of it: ('since', _params[..].strftime(..))
                wire = args[0].elts[0].value
                py = next(filter(None, map(param, ast.walk(args[0].elts[1]))))
                pairs = op["query" if node.func.value.id == "_query_params" else "form"]
                if (wire, py) not in pairs:
                    pairs.append((wire, py))
            elif attr in ("select_header_content_type", "select_header_accept"):
                key = "content_types" if attr == "select_header_content_type" else "accept"
                op[key] = [e.value for e in args[0].elts]
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            if isinstance(target, ast.Name) and target.id == "_auth_settings":
                op["auth"] = [e.value for e in value.elts]
            elif isinstance(target, ast.Name) and target.id == "_response_types_map":
                op["responses"] = ast.literal_eval(value)
            elif isinstance(target, ast.Name) and target.id == "_body_params" and param(value):
                op["body"] = param(value)
            elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
                holder, key = target.value.id, target.slice
                if holder == "_header_params" and param(value):
                    op["header"].append((key.value, param(value)))
                elif holder == "_path_params" and param(value):
                    op["path_params"][key.value] = param(value)
                elif holder == "_files":
                    op["files"].append(key.value)
    return op


def _sdk_operation_object(operation_id: str, op: dict[str, Any], schemas: dict) -> dict:
    signature = op["signature"]
    parameters = []
    for location, pairs in (("query", op["query"]), ("header", op["header"])):
        for wire, py in pairs:
            parameters.append(
                {
                    "name": wire,
                    "in": location,
                    "required": signature.parameters[py].default is signature.empty,
                    "schema": _sdk_param_schema(op["hints"][py], schemas),
                }
            )
    for name in re.findall(r"\{(\w+)\}", op["path"]):
        py = op["path_params"].get(name, name)
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _sdk_param_schema(op["hints"][py], schemas),
            }
        )
    result: dict[str, Any] = {
        "operationId": operation_id,
        "parameters": parameters,
        "security": [{name: []} for name in op["auth"] if name in _sdk_security_schemes()],
        "responses": {},
    }
    binary = {"type": "string", "format": "binary"}
    if op["body"] is not None:
        schema = _sdk_param_schema(op["hints"][op["body"]], schemas)
        result["requestBody"] = {
            "required": signature.parameters[op["body"]].default is signature.empty,
            "content": {t: {"schema": schema} for t in op["content_types"]},
        }
    elif op["files"] or op["form"]:
        content: dict[str, Any] = {}
        for media_type in op["content_types"]:
            if media_type == "multipart/form-data":
                properties = {f: binary for f in op["files"]}
                properties |= {w: _sdk_param_schema(op["hints"][p], schemas) for w, p in op["form"]}
                content[media_type] = {"schema": {"type": "object", "properties": properties}}
            else:
                content[media_type] = {"schema": binary}
        result["requestBody"] = {"content": content}
    if not op["responses"]:  # the client reads no body, whatever the status
        result["responses"]["default"] = {"description": "no body (the SDK knows no more)"}
    else:  # swagger.yml's `default: ServerError`, which the generated client leaves out
        _sdk_add_model("Error", schemas)
        result["responses"]["default"] = {
            "description": "Error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    for status, type_name in op["responses"].items():
        response: dict[str, Any] = {"description": type_name or "no body"}
        if type_name is not None:
            schema = _sdk_type_schema(type_name, schemas)
            # Bytes and plain strings come as the first non-JSON type the client accepts
            # (getObject: application/octet-stream; createBranch: text/html); models as JSON.
            other = [t for t in op["accept"] if "json" not in t]
            media = other[:1] if type_name in ("bytearray", "str") and other else []
            media = media or (["application/octet-stream"] if schema == binary else [])
            media = media or ["application/json"]
            response["content"] = {media[0]: {"schema": schema}}
        result["responses"][status] = response
    return result


def _sdk_param_schema(annotation: Any, schemas: dict) -> dict[str, Any]:
    """The schema pydantic (v1) gives a parameter of this annotation."""
    from pydantic.v1 import create_model

    model = create_model("Parameter", value=(annotation, None))
    schema = model.schema(ref_template="#/components/schemas/{model}")
    for name in schema.get("definitions", {}):
        _sdk_add_model(name, schemas)
    return _untitled(schema["properties"]["value"])


def _sdk_type_schema(type_: Any, schemas: dict) -> dict[str, Any]:
    """The schema of a response type name of the SDK (``"Repository"``, ``"List[Diff]"``,
    ``"bytearray"``) or of a body's model class."""
    import re

    if isinstance(type_, type):
        type_ = type_.__name__
    simple = {
        "bytearray": {"type": "string", "format": "binary"},
        "str": {"type": "string"},
        "int": {"type": "integer"},
        "bool": {"type": "boolean"},
        "float": {"type": "number"},
        "object": {},
    }
    if type_ in simple:
        return dict(simple[type_])
    if match := re.fullmatch(r"List\[(.+)\]", type_):
        return {"type": "array", "items": _sdk_type_schema(match[1], schemas)}
    if match := re.fullmatch(r"Dict\[str, (.+)\]", type_):
        return {"type": "object", "additionalProperties": _sdk_type_schema(match[1], schemas)}
    _sdk_add_model(type_, schemas)
    return {"$ref": f"#/components/schemas/{type_}"}


def _sdk_add_model(name: str, schemas: dict) -> None:
    """Add model ``name`` of ``lakefs_sdk.models`` (and the models it holds) to ``schemas``,
    with the patterns and enums its validators check."""
    import lakefs_sdk.models

    if name in schemas:
        return
    cls = getattr(lakefs_sdk.models, name)
    schema = cls.schema(by_alias=True, ref_template="#/components/schemas/{model}")
    schemas[name] = schema  # before the nested ones: models may refer to each other
    for nested in schema.pop("definitions", {}):
        _sdk_add_model(nested, schemas)
    for field_name, validators in getattr(cls, "__validators__", {}).items():
        prop = schema["properties"][cls.__fields__[field_name].alias]
        target = prop["items"] if prop.get("type") == "array" else prop
        for validator in validators:
            consts = validator.func.__code__.co_consts
            if "enum" in str(consts[0]):
                target["enum"] = list(next(c for c in consts if isinstance(c, tuple)))
            elif "regular expression" in str(consts[0]):
                target["pattern"] = next(
                    c for c in consts[1:] if isinstance(c, str) and c.startswith("^")
                )
    schemas[name] = _untitled(schema)


def _untitled(schema: Any) -> Any:
    """``schema`` without pydantic's ``title`` keys."""
    if isinstance(schema, dict):
        return {k: _untitled(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


@functools.cache
def _sdk_security_schemes() -> dict[str, dict[str, str]]:
    """The SDK's authentication settings as OpenAPI security schemes."""
    from lakefs_sdk.configuration import Configuration

    config = Configuration(
        host="http://unused",
        username="u",
        password="p",
        access_token="t",
        api_key={k: "v" for k in ("cookie_auth", "oidc_auth", "saml_auth")},
    )
    out = {}
    for name, setting in config.auth_settings().items():
        if setting["type"] == "basic":
            out[name] = {"type": "http", "scheme": "basic"}
        elif setting["type"] == "bearer":
            out[name] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        else:
            out[name] = {"type": "apiKey", "in": setting["in"], "name": setting["key"]}
    return out
