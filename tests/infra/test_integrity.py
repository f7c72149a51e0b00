"""Weights integrity: digests, verification before loading, and weights-only loading."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from infra.integrity import (
    WEIGHTS_SHA256_TAG,
    IntegrityError,
    load_verified_state_dict,
    manifest_sha256,
    sha256_hex,
    verify_sha256,
    weights_sha256_tag,
)

# FIPS 180-2, Appendix B.1: SHA-256("abc").
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _saved(path, obj) -> bytes:
    torch.save(obj, path)
    return path.read_bytes()


def test_sha256_hex_matches_the_published_test_vector():
    assert sha256_hex(b"abc") == ABC_SHA256


def test_verify_returns_the_digest_when_every_record_matches():
    assert verify_sha256(b"abc", [ABC_SHA256, None, ABC_SHA256.upper()], source="x") == ABC_SHA256


def test_verify_refuses_a_mismatch_naming_source_digests_and_what_to_do():
    other = sha256_hex(b"abd")
    with pytest.raises(
        IntegrityError,
        match=rf"weights of run r1 has been modified: its sha256 is {other}, but {ABC_SHA256} "
        r"was recorded .*refusing to load it\. Do not load these weights: re-register the model "
        r"from a trusted training run",
    ):
        verify_sha256(b"abd", [ABC_SHA256], source="weights of run r1")


def test_verify_refuses_when_any_record_disagrees():
    with pytest.raises(IntegrityError, match="has been modified"):
        verify_sha256(b"abc", [ABC_SHA256, sha256_hex(b"other")], source="x")


@pytest.mark.parametrize("records", [[], [None], [None, None]])
def test_verify_refuses_when_no_digest_is_recorded(records):
    with pytest.raises(
        IntegrityError, match=rf"no sha256 is recorded for w .*`{WEIGHTS_SHA256_TAG}`.*refusing"
    ):
        verify_sha256(b"abc", records, source="w")


@pytest.mark.parametrize("bad", ["", "abc", "z" * 64, ABC_SHA256 + "0"])
def test_verify_refuses_a_malformed_record(bad):
    with pytest.raises(IntegrityError, match=r"64 hex digits .*Refusing to load it"):
        verify_sha256(b"abc", [bad], source="w")


def test_weights_sha256_tag_names_the_key_and_checks_the_digest():
    assert weights_sha256_tag(ABC_SHA256.upper()) == {"tai.weights_sha256": ABC_SHA256}
    with pytest.raises(ValueError, match=r"Expected sha256 to be 64 hex digits .*got 'nope'"):
        weights_sha256_tag("nope")


def test_load_verified_state_dict_loads_the_untampered_file(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1.0])}
    digest = sha256_hex(_saved(tmp_path / "s.pt", state))

    loaded = load_verified_state_dict(tmp_path / "s.pt", [digest], source="s")

    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_load_verified_state_dict_refuses_swapped_weights_before_unpickling(tmp_path, monkeypatch):
    digest = sha256_hex(_saved(tmp_path / "s.pt", {"w": torch.zeros(3)}))
    _saved(tmp_path / "s.pt", {"w": torch.ones(3)})  # same shape, other values
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))

    with pytest.raises(IntegrityError, match="has been modified"):
        load_verified_state_dict(tmp_path / "s.pt", [digest], source="s")


class _Exploit:
    """Unpickling this would create a folder (a stand-in for arbitrary code)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_recorded_but_malicious_pickle_is_still_not_executed(tmp_path):
    # Even a digest recorded for a malicious file does not make it run: weights_only.
    flag = tmp_path / "pwned"
    digest = sha256_hex(_saved(tmp_path / "evil.pt", {"w": _Exploit(str(flag))}))

    with pytest.raises(IntegrityError) as refused:
        load_verified_state_dict(tmp_path / "evil.pt", [digest], source="weights of run r1")
    assert not flag.exists()
    message = str(refused.value)
    assert message == (
        "weights of run r1 is not plain weights: it holds Python objects that loading would "
        f"run ({os.mkdir.__module__}.mkdir); refusing to load it. Re-register the model from a "
        "trusted run."
    )  # one line for the CLI, without torch's advice to load it with weights_only=False


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    digest = sha256_hex(_saved(tmp_path / "list.pt", [torch.zeros(2)]))

    with pytest.raises(IntegrityError, match="list.pt holds a list, not a state dict"):
        load_verified_state_dict(tmp_path / "list.pt", [digest], source="list.pt")


def test_manifest_is_the_digest_of_sha256sum_lines_sorted_by_path(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y.txt").write_bytes(b"abc")
    (tmp_path / "a.txt").write_bytes(b"")
    empty = hashlib.sha256(b"").hexdigest()
    expected = hashlib.sha256(f"{empty}  a.txt\n{ABC_SHA256}  b/y.txt\n".encode()).hexdigest()

    assert manifest_sha256(tmp_path) == expected


def test_manifest_changes_with_any_content_name_or_file_but_not_mlflow_meta(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}")
    (tmp_path / "w.pt").write_bytes(b"weights")
    before = manifest_sha256(tmp_path)

    (tmp_path / "registered_model_meta").write_text("model_name: m\nmodel_version: 1\n")
    assert manifest_sha256(tmp_path) == before

    (tmp_path / "w.pt").write_bytes(b"weightz")
    changed = manifest_sha256(tmp_path)
    (tmp_path / "w.pt").rename(tmp_path / "v.pt")
    renamed = manifest_sha256(tmp_path)
    (tmp_path / "extra.py").write_text("import os")
    added = manifest_sha256(tmp_path)
    assert len({before, changed, renamed, added}) == 4


def test_manifest_of_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        manifest_sha256(tmp_path / "nope")
