"""The `tai models` table (flows.summary.versions_table)."""

from flows.summary import versions_table
from infra.mlflow_store import ModelVersionInfo


def _version(number: str, *, gates: str, approval: str = "", champion: bool = False):
    tags = {"tai.data.commit": f"c{number}" * 8, "tai.gates.passed": gates}
    if approval:
        tags["tai.approval"] = approval
    return ModelVersionInfo("m", number, "run", tags, ["champion"] if champion else [])


def test_table_shows_gates_champion_and_pending_or_rejected_approval():
    table = versions_table(
        [
            _version("1", gates="false"),
            _version("2", gates="true", approval="approved", champion=True),
            _version("3", gates="true", approval="rejected"),
            _version("4", gates="true", approval="pending"),
        ],
        {"2": {"accuracy": 0.98, "ece": 0.01, "mean_corruption_accuracy": 0.8}},
    )
    rows = table.splitlines()[2:]
    assert rows[0].split()[2:5] == ["-", "-", "-"] and "FAIL" in rows[0]
    assert rows[1].split()[2:7] == ["0.9800", "0.0100", "0.8000", "pass", "yes"]
    assert rows[2].split()[-1] == "rejected"
    assert rows[3].split()[-1] == "pending"


def test_no_versions_says_what_to_do():
    assert "run `tai run` or `tai demo`" in versions_table([])


def test_run_summary_says_a_passing_version_was_not_approved(tmp_path):
    from flows.pipeline import PipelineResult
    from flows.summary import describe_result

    metrics = {"accuracy": 0.98, "ece": 0.01, "mean_corruption_accuracy": 0.8, "deletion_auc": 0.2}
    result = PipelineResult(
        data_commit="c",
        run_id="r",
        version="4",
        promoted=False,
        champion_version="2",
        metrics=metrics,
        reasons=[],
        report_path=tmp_path / "r.html",
        gates_passed=True,
        approval="version 4 rejected by alice: wrong data",
    )
    text = describe_result(result)
    assert "approval         version 4 rejected by alice: wrong data" in text
    assert "gates            all passed, but not approved: not promoted" in text
    assert "champion         2" in text
    assert "FAILED" not in text


def test_run_summary_names_test_images_that_leaked_from_training(tmp_path):
    from flows.pipeline import PipelineResult
    from flows.summary import describe_result

    metrics = {"accuracy": 0.98, "ece": 0.01, "mean_corruption_accuracy": 0.8, "deletion_auc": 0.2}
    common = {
        "data_commit": "c",
        "run_id": "r",
        "version": "1",
        "promoted": False,
        "champion_version": None,
        "metrics": metrics,
        "reasons": ["FAIL: data_split_leakage = 3.0000 (required <= 0)"],
        "report_path": tmp_path / "r.html",
    }
    leaked = describe_result(
        PipelineResult(**common, data={"data_split_leakage": 3.0, "data_val_leakage": 1.0})
    )
    assert (
        "data leakage     3 test images, 1 validation images also in training (see the data "
        "card's leakage pairs)"
    ) in leaked.splitlines()
    clean = describe_result(
        PipelineResult(**common, data={"data_split_leakage": 0.0, "data_val_leakage": 0.0})
    )
    assert "data leakage     0 test images, 0 validation images also in training" in clean
    assert "data leakage" not in describe_result(PipelineResult(**common))
