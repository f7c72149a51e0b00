"""The lakeFS double keeps to lakeFS's OpenAPI spec, and says so loudly when anyone does not.

The scenario drives every route of the double through the real ``lakefs`` SDK (high-level
objects and, for the few calls they do not wrap, the generated ``lakefs_sdk`` client),
then checks that no request or response violated the spec. The other tests send requests
by hand, or break the double on purpose, to show that violations are refused and recorded.

Every test runs against both descriptions of the API: lakeFS's own
``shared/lakefs/swagger.yml`` (when it is there) and the one built from the ``lakefs-sdk``
package (always there: the ``lakefs`` dependency installs it), so a clean clone checks
the double too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
import urllib3

from tests.infra.lakefs_double import (
    ROUTES,
    LakeFSDouble,
    find_spec,
    sdk_openapi,
    sdk_spec,
    shared_spec,
)

# The sources here: a clean clone has only the SDK's, so nothing skips for want of a spec.
SOURCES = {name: path for name, path in (("sdk", sdk_spec()), ("shared", shared_spec())) if path}


@pytest.fixture(params=sorted(SOURCES))
def spec(request):
    """The spec file of one source."""
    return SOURCES[request.param]


@pytest.fixture
def double(spec):
    with LakeFSDouble(max_lifetime_s=120, spec=spec) as lakefs:
        yield lakefs


@pytest.fixture
def client(double):
    import lakefs

    return lakefs.Client(
        host=double.endpoint, username=double.access_key_id, password=double.secret_access_key
    )


def _call(double, method, path, *, auth=None, **kwargs):
    """A hand-made request to the double (urllib3, no SDK in between)."""
    user, password = auth or (double.access_key_id, double.secret_access_key)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", **kwargs.pop("headers", {})}
    return urllib3.request(
        method, f"{double.endpoint}/api/v1{path}", headers=headers, retries=False, **kwargs
    )


def test_every_route_answers_a_full_sdk_scenario_within_the_spec(double, client):
    import lakefs

    sdk = client.sdk_client
    sdk.health_check_api.health_check()
    assert client.storage_config.default_namespace_prefix == "mem://tai-double"
    assert sdk.internal_api.get_lake_fs_version().version
    assert sdk.internal_api.get_storage_config().blockstore_type == "mem"
    assert sdk.internal_api.get_setup_state().state == "initialized"

    repo = lakefs.Repository("scenario", client=client).create(storage_namespace="mem://s/x")
    assert [r.id for r in lakefs.repositories(client)] == ["scenario"]
    main = repo.branch("main")
    main.object("ds/a.png").upload(data=b"a", mode="wb")  # pre_sign probed from /config
    main.object("ds/sub/b.png").upload(data=b"bb", mode="wb", metadata={"origin": "cam"})
    assert [c.type for c in main.uncommitted()] == ["added", "added"]
    first = main.commit(message="first", metadata={"seed": "0"}).id

    feature = repo.branch("feature").create(source_reference="main")
    feature.object("ds/c.png").upload(data=b"ccc", mode="wb", pre_sign=False)
    feature.object("ds/a.png").delete()
    feature.commit(message="second")
    assert [b.id for b in repo.branches()] == ["feature", "main"]
    assert feature.head.id == feature.get_commit().id

    merged = feature.merge_into(main, message="merge")
    commit = repo.commit(merged)
    assert [c.message for c in commit.log()] == ["merge", "second", "first", "Repository created"]
    assert [(c.type, c.path) for c in repo.commit(first).diff(merged, type="two_dot")] == [
        ("removed", "ds/a.png"),
        ("added", "ds/c.png"),
    ]
    listing = list(commit.objects(prefix="ds/", delimiter="/"))
    assert [(o.path, type(o).__name__) for o in listing] == [
        ("ds/c.png", "ObjectInfo"),
        ("ds/sub/", "CommonPrefix"),
    ]
    stats = commit.object("ds/sub/b.png").stat()
    assert stats.checksum == hashlib.md5(b"bb").hexdigest()
    assert stats.metadata == {"origin": "cam"}
    assert commit.object("ds/sub/b.png").exists()
    assert not commit.object("ds/a.png").exists()
    with commit.object("ds/c.png").reader(mode="rb") as reader:
        assert reader.read() == b"ccc"

    feature.delete()
    repo.delete()

    assert double.violations == []
    assert {op for _, op in double.requests} == set(ROUTES.values())


def test_a_request_that_violates_the_spec_gets_500_and_is_recorded(double):
    response = _call(double, "POST", "/repositories", json={"name": "Bad_Name"})

    assert response.status == 500
    assert "violates the lakeFS spec" in response.json()["message"]
    assert len(double.violations) == 1
    assert "storage_namespace" in double.violations[0]
    assert "Bad_Name" in double.violations[0]


def test_a_query_parameter_of_the_wrong_type_is_a_violation(double):
    _call(double, "POST", "/repositories", json={"name": "data", "storage_namespace": "mem://d"})

    response = _call(double, "GET", "/repositories/data/branches", fields={"amount": "lots"})

    assert response.status == 500
    assert double.violations and "amount" in double.violations[0]


def test_a_path_outside_the_served_api_is_a_violation(double):
    response = _call(double, "GET", "/repositories/data/tags")

    assert response.status == 500
    assert double.violations == [
        "GET /api/v1/repositories/data/tags is not an operation the double serves (404)"
    ]


def test_a_response_that_violates_the_spec_is_replaced_by_500_and_recorded(spec):
    class Broken(LakeFSDouble):
        def _getRepository(self, request, repository):
            reply = super()._getRepository(request, repository)
            del reply.json["creation_date"]
            return reply

    with Broken(max_lifetime_s=60, spec=spec) as double:
        _call(
            double, "POST", "/repositories", json={"name": "data", "storage_namespace": "mem://d"}
        )
        response = _call(double, "GET", "/repositories/data")

    assert response.status == 500
    assert len(double.violations) == 1
    assert "response 200 to GET /api/v1/repositories/data" in double.violations[0]
    assert "'creation_date' is a required property" in double.violations[0]


@pytest.mark.parametrize("auth", [("AKIAIOSFODNN7EXAMPLE", "wrong"), ("someone", "else")])
def test_wrong_credentials_get_401_within_the_spec(double, auth):
    response = _call(double, "GET", "/repositories", auth=auth)

    assert response.status == 401
    assert response.json() == {"message": "error authenticating request"}
    assert double.violations == []


def test_missing_credentials_get_401(double):
    response = urllib3.request("GET", f"{double.endpoint}/api/v1/repositories", retries=False)

    assert response.status == 401


def test_multipart_uploads_are_accepted_as_the_spec_allows(double):
    _call(double, "POST", "/repositories", json={"name": "data", "storage_namespace": "mem://d"})

    response = _call(
        double,
        "POST",
        "/repositories/data/branches/main/objects?path=a.bin",
        fields={"content": ("a.bin", b"\x00\x01", "application/x-test")},
    )

    assert response.status == 201
    assert response.json()["checksum"] == hashlib.md5(b"\x00\x01").hexdigest()
    assert response.json()["content_type"] == "application/x-test"
    assert double.violations == []


def test_what_the_double_does_not_implement_is_refused_not_ignored(double):
    _call(double, "POST", "/repositories", json={"name": "data", "storage_namespace": "mem://d"})

    response = _call(
        double,
        "GET",
        "/repositories/data/refs/main/objects?path=x",
        headers={"Range": "bytes=0-1"},
    )

    assert response.status == 501
    assert response.json() == {"message": "the lakeFS double does not implement `Range`"}
    assert double.violations == []


def test_merge_conflict_answer_fits_both_the_deprecated_and_the_error_schema(double):
    def put(branch, data):
        _call(
            double,
            "POST",
            f"/repositories/data/branches/{branch}/objects?path=f",
            body=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        _call(
            double,
            "POST",
            f"/repositories/data/branches/{branch}/commits",
            json={"message": data.decode()},
        )

    _call(double, "POST", "/repositories", json={"name": "data", "storage_namespace": "mem://d"})
    _call(double, "POST", "/repositories/data/branches", json={"name": "b", "source": "main"})
    put("main", b"ours")
    put("b", b"theirs")

    response = _call(double, "POST", "/repositories/data/refs/b/merge/main", json={})

    assert response.status == 409
    assert json.loads(response.data) == {"message": "conflict found", "reference": ""}
    assert double.violations == []


def test_the_double_stops_itself_after_its_lifetime(spec):
    double = LakeFSDouble(max_lifetime_s=0.2, spec=spec).start()
    endpoint = double.endpoint
    time.sleep(0.6)

    with pytest.raises(urllib3.exceptions.HTTPError):
        urllib3.request("GET", f"{endpoint}/api/v1/healthcheck", retries=False, timeout=2)
    with pytest.raises(RuntimeError, match="the lakeFS double is not running; call start"):
        double.endpoint  # noqa: B018


def test_a_response_field_out_of_its_enum_is_a_violation(spec):
    """A diff entry of a type lakeFS does not have (the SDK's models check it in a validator,
    which the spec built from them turns into an enum)."""

    class Broken(LakeFSDouble):
        def _diffRefs(self, request, repository, leftRef, rightRef):  # noqa: N803
            reply = super()._diffRefs(request, repository, leftRef, rightRef)
            for entry in reply.json["results"]:
                entry["type"] = "moved"
            return reply

    with Broken(max_lifetime_s=60, spec=spec) as double:
        _call(
            double, "POST", "/repositories", json={"name": "data", "storage_namespace": "mem://d"}
        )
        _call(double, "POST", "/repositories/data/branches", json={"name": "b", "source": "main"})
        _call(
            double,
            "POST",
            "/repositories/data/branches/b/objects?path=f",
            body=b"x",
            headers={"Content-Type": "application/octet-stream"},
        )
        _call(double, "POST", "/repositories/data/branches/b/commits", json={"message": "m"})
        response = _call(double, "GET", "/repositories/data/refs/main/diff/b")

    assert response.status == 500
    assert len(double.violations) == 1
    assert "'moved' is not one of" in double.violations[0]


def test_the_spec_is_found_without_shared(monkeypatch):
    """In a clean clone (no shared/ beside it) the double is checked against the SDK's."""
    import tests.infra.lakefs_double as module

    monkeypatch.setattr(module, "shared_spec", lambda: None)

    assert module.find_spec() == sdk_spec()


def test_the_sdk_spec_describes_every_route_of_the_double_where_the_double_serves_it():
    document = sdk_openapi()

    served = {
        (path, method.upper()): op["operationId"]
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    }
    expected = {
        (path.replace("<", "{").replace(">", "}"), method): op
        for (path, method), op in ROUTES.items()
    }
    assert served == expected
    repository = document["components"]["schemas"]["RepositoryCreation"]
    assert repository["required"] == ["name", "storage_namespace"]
    assert repository["properties"]["name"]["pattern"] == "^[a-z0-9][a-z0-9-]{2,62}$"
    assert find_spec() is not None
