"""Bad input through the `tai` CLI: one line naming the problem, exit 1, nothing registered."""

import shutil

import pytest
from typer.testing import CliRunner

from flows.cli import app
from infra.mlflow_store import MlflowStore
from tests.conftest import write_tiny_dataset
from tests.flows.conftest import commit_dataset

pytestmark = pytest.mark.integration


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def _assert_one_line_error(result, pattern: str) -> None:
    import re

    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # Progress lines of the stages that finished may come first; the error is one line,
    # the last one, and nothing else looks like an error or a traceback.
    assert lines[-1].startswith("error: "), result.stderr
    assert re.search(pattern, lines[-1]), lines[-1]
    others = lines[:-1]
    assert all(" done in " in line for line in others), result.stderr


def _nothing_registered(settings) -> None:
    store = MlflowStore(settings)
    assert store.list_versions() == []
    assert store.champion() is None


def test_run_on_a_branch_that_does_not_exist(tiny_settings, tiny_repo):
    result = _run("run", "--branch", "nope")
    _assert_one_line_error(result, "`nope` is neither a branch nor a commit .*branches: main")
    _nothing_registered(tiny_settings)


def test_run_on_a_commit_that_does_not_exist(tiny_settings, tiny_repo):
    result = _run("run", "--commit", "0123456789abcdef")
    _assert_one_line_error(result, "`0123456789abcdef` is neither a branch nor a commit")
    _nothing_registered(tiny_settings)


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (lambda d: shutil.rmtree(d / "test"), r"split folder\(s\) \['test'\] missing"),
        (
            lambda d: (d / "train" / "1" / "3.png").write_bytes(b"not a png"),
            "cannot decode image .*3.png",
        ),
        (
            lambda d: (
                [p.unlink() for p in (d / "val" / "2").glob("*.png")]
                and (d / "val" / "2" / "README.txt").write_text("scans pending")
            ),
            r"class folder .*val/2 holds no images",
        ),
    ],
    ids=["missing-split", "undecodable-png", "empty-class"],
)
def test_run_on_a_malformed_dataset(tiny_settings, tmp_path, damage, pattern):
    dataset = write_tiny_dataset(tmp_path / "src", counts={"train": 6, "val": 3, "test": 3})
    damage(dataset)
    commit_dataset(tiny_settings, tmp_path / "src")
    result = _run("run")
    _assert_one_line_error(result, pattern)
    _nothing_registered(tiny_settings)


@pytest.mark.parametrize(
    ("policy", "pattern"),
    [
        (
            "gates: [{metric: acuracy, min: 0.9}]",
            "unknown metric 'acuracy'; did you mean 'accuracy' or 'aurc' or 'clean_accuracy'\\? "
            "`tai metrics` lists the [0-9]+ metrics the checks report",
        ),
        (
            "gates: [{metric: accuracy, min: ninety}]",
            r"`min: 'ninety'` is not a finite number; write e.g. `min: 0.95`",
        ),
    ],
    ids=["unknown-metric", "malformed-threshold"],
)
def test_run_with_a_bad_policy(tiny_settings, tiny_repo, policy, pattern):
    tiny_settings.policy_file.write_text(policy)
    result = _run("run")
    _assert_one_line_error(result, pattern)
    _nothing_registered(tiny_settings)


def test_data_commands_version_a_change(tiny_settings, tiny_repo, tmp_path):
    extra = write_tiny_dataset(tmp_path / "extra", counts={"train": 2}, classes=1, seed=5)
    assert _run("data", "branch", "more").exit_code == 0
    result = _run(
        "data",
        "commit",
        str(extra.parent),
        "--branch",
        "more",
        "-m",
        "two more",
        "--meta",
        "source=scanner-3",
    )
    assert result.exit_code == 0, result.output
    merged = _run("data", "merge", "more")
    assert merged.exit_code == 0 and "merged more into main" in merged.stdout
    diff = _run("data", "diff", tiny_repo, "main")
    assert "2 changed files" in diff.stdout
    log = _run("data", "log")
    assert "two more" in log.stdout and "source=scanner-3" in log.stdout


def test_commit_metadata_must_be_key_value(tiny_settings, tiny_repo, tmp_path):
    (tmp_path / "x").mkdir()
    result = _run(
        "data", "commit", str(tmp_path / "x"), "--branch", "main", "-m", "m", "--meta", "oops"
    )
    _assert_one_line_error(result, "--meta 'oops' is not key=value")


def test_report_of_a_missing_version(tiny_settings):
    _assert_one_line_error(
        _run("report", "7"), "model `tai-classifier` has no version '7'; versions: none"
    )
    _assert_one_line_error(_run("report"), "has no `champion` yet; run `tai run`")


def test_an_oxen_merge_emits_the_data_merged_event(tiny_settings, tiny_repo, tmp_path, monkeypatch):
    import infra.events

    emitted = []

    def emit(*args):
        emitted.append(args)
        return "0b5e55ed-0000-4000-8000-000000000000"

    monkeypatch.setattr(infra.events, "prefect_api_url", lambda: "http://127.0.0.1:4200/api")
    monkeypatch.setattr(infra.events, "emit_data_merged", emit)
    extra = write_tiny_dataset(tmp_path / "extra", counts={"train": 1}, classes=1, seed=3)
    assert _run("data", "branch", "more").exit_code == 0
    assert _run("data", "commit", str(extra.parent), "--branch", "more", "-m", "m").exit_code == 0
    merged = _run("data", "merge", "more")
    commit_id = merged.stdout.splitlines()[0].rsplit(" ", 1)[-1]
    assert emitted == [("oxen", "data", "main", commit_id, "more", {"via": "tai data merge"})]
    assert (
        f"emitted tai.data.merged for {commit_id} (event 0b5e55ed-0000-4000-8000-000000000000)"
        in merged.stdout
    )


def test_an_oxen_merge_whose_event_prefect_did_not_emit_says_so(
    tiny_settings, tiny_repo, tmp_path, monkeypatch
):
    """emit_data_merged returns None when Prefect emits nothing: no "emitted" line then."""
    import infra.events

    monkeypatch.setattr(infra.events, "prefect_api_url", lambda: "http://127.0.0.1:4200/api")
    monkeypatch.setattr(infra.events, "emit_data_merged", lambda *a: None)
    extra = write_tiny_dataset(tmp_path / "extra", counts={"train": 1}, classes=1, seed=3)
    assert _run("data", "branch", "more").exit_code == 0
    assert _run("data", "commit", str(extra.parent), "--branch", "more", "-m", "m").exit_code == 0
    merged = _run("data", "merge", "more")
    assert merged.exit_code == 0
    assert "emitted" not in merged.stdout
    assert "note: Prefect emitted no tai.data.merged event" in merged.stderr


def test_an_oxen_merge_without_a_prefect_server_says_no_event_was_emitted(
    tiny_settings, tiny_repo, tmp_path, monkeypatch
):
    import infra.events

    monkeypatch.setattr(infra.events, "prefect_api_url", lambda: None)
    extra = write_tiny_dataset(tmp_path / "extra", counts={"train": 1}, classes=1, seed=4)
    _run("data", "branch", "more")
    _run("data", "commit", str(extra.parent), "--branch", "more", "-m", "m")
    merged = _run("data", "merge", "more")
    assert merged.exit_code == 0
    assert "PREFECT_API_URL is not set, so no tai.data.merged event was emitted" in merged.stderr


def test_run_with_an_unknown_corruption(tiny_settings, tiny_repo, monkeypatch):
    monkeypatch.setenv("TAI_CORRUPTIONS", '["gaussian_noise", "lens_dirt"]')
    result = _run("run")
    _assert_one_line_error(
        result, r"TAI_CORRUPTIONS: unknown corruption 'lens_dirt'; available: gaussian_noise, "
    )
    _nothing_registered(tiny_settings)


def test_run_with_a_plugin_that_does_not_import(tiny_settings, tiny_repo, monkeypatch):
    monkeypatch.setenv("TAI_CORRUPTION_PLUGINS", '["no_such_module:dirt"]')
    result = _run("run")
    _assert_one_line_error(result, r"TAI_CORRUPTION_PLUGINS: .*no_such_module")
    _nothing_registered(tiny_settings)


@pytest.mark.parametrize(
    ("policy", "pattern"),
    [
        (
            "gates: [{metric: aurc, max: 0.1, use: upper}]",
            r"no confidence bound is computed for 'aurc'; `use: lower\|upper` works with accuracy",
        ),
        (
            "gates: [{metric: accuracy, min: 0.9}]\nchampion: [{metric: mia_auc, margin: 0.1, "
            "better: lower}]",
            r"the champion section cannot compare 'mia_auc'; paired comparisons exist for",
        ),
        (
            "gates: [{metric: accuracy, min: 0.9}]\napproval: {required: true, timeout_s: 0}",
            r"approval: `timeout_s: 0` must be a whole number of seconds >= 1",
        ),
    ],
    ids=["bound-not-computed", "comparison-not-computed", "approval-timeout"],
)
def test_run_with_a_policy_the_evaluation_cannot_judge(tiny_settings, tiny_repo, policy, pattern):
    tiny_settings.policy_file.write_text(policy)
    result = _run("run")
    _assert_one_line_error(result, pattern)
    _nothing_registered(tiny_settings)


class _Exploit:
    """Unpickling this would create a folder (a stand-in for arbitrary code)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))


def test_run_with_pretrained_weights_that_are_a_malicious_pickle(
    tiny_settings, tiny_repo, tmp_path, monkeypatch
):
    import torch

    flag = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"features.0.weight": _Exploit(str(flag))}, evil)
    monkeypatch.setenv("TAI_PRETRAINED", str(evil))
    result = _run("run")
    _assert_one_line_error(
        result,
        r"the pretrained weights .*evil\.pt.* are not plain weights: they hold Python objects "
        r"that loading would run \(\w+\.mkdir\); refusing to load them",
    )
    assert "Traceback" not in result.output
    assert not flag.exists()
    _nothing_registered(tiny_settings)


def test_a_registered_weights_file_that_is_a_malicious_pickle_is_one_line(tmp_path):
    """The registry's integrity error is among the CLI's expected errors: a pickled weights
    file, even with its digest recorded, is one line and exit 1, never torch's traceback."""
    import hashlib

    import torch
    import typer

    from flows.cli.common import cli_errors
    from infra.integrity import load_verified_state_dict

    flag = tmp_path / "pwned"
    evil = tmp_path / "state_dict.pt"
    torch.save({"w": _Exploit(str(flag))}, evil)
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    probe = typer.Typer()

    @probe.command()
    @cli_errors
    def load() -> None:
        load_verified_state_dict(evil, [digest], source="weights of version 3")

    result = CliRunner().invoke(probe, [])
    _assert_one_line_error(
        result,
        r"^error: weights of version 3 is not plain weights: it holds Python objects that "
        r"loading would run \(\w+\.mkdir\); refusing to load it\. "
        r"Re-register the model from a trusted run\.$",
    )
    assert not flag.exists()
