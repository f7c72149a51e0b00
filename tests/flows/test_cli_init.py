"""`tai init`: the requirements file from options or answers, the policy derived from it,
and a looser policy refused."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tai.evaluation.registry import metric_specs
from tai.gates.derivation import derive_policy
from tai.gates.policy import parse_policy
from tai.gates.requirements import load_requirements

OPTIONS = [
    "--no-interactive",
    "--system", "x-ray triage",
    "--purpose", "flag chest x-rays a radiologist should read first",
    "--context", "a hospital's radiology department",
    "--user", "radiologists",
    "--affected", "patients",
    "--risk-class", "high",
    "--risk-reason", "a medical device's safety component (Annex I)",
    "--need", "reliability=high:a missed finding harms a patient",
    "--need", "transparency=high:radiologists must see why",
    "--need", "fairness=high:every patient group alike",
    "--need", "privacy=high:patient images",
    "--need", "security=medium:an internal network",
    "--need", "autonomy=high:the radiologist decides",
    "--group-column", "sex",
    "--group-reason", "findings differ by sex",
    "--personal-data",
    "--personal-data-reason", "medical images of patients",
    "--oversight", "human-in-the-loop",
    "--oversight-reason", "a radiologist reads every flagged image",
    "--perturbation", "gaussian_noise",
    "--perturbation", "contrast",
]  # fmt: skip


@pytest.fixture
def here(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("TAI_REQUIREMENTS_FILE", str(tmp_path / "tai-requirements.yaml"))
    monkeypatch.setenv("TAI_POLICY_FILE", str(tmp_path / "tai-policy.yaml"))
    return tmp_path


def _run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, ["init", *args], input=input)


def test_init_from_options_writes_the_requirements_and_the_derived_policy(here):
    result = _run(*OPTIONS)
    assert result.exit_code == 0, result.output
    requirements = load_requirements(here / "tai-requirements.yaml")
    assert requirements.risk_class == "high" and requirements.group_column == "sex"
    policy_text = (here / "tai-policy.yaml").read_text()
    assert policy_text == derive_policy(requirements, metric_specs())
    policy = parse_policy(policy_text, metric_specs(), monitoring_specs=metric_specs())
    assert policy.confidence == 0.99 and policy.approval.required
    assert "worst_group_accuracy" in {g.metric for g in policy.gates}
    assert result.stdout.splitlines()[-1] == (
        f"derived the gate policy from {here / 'tai-requirements.yaml'}: wrote "
        f"{here / 'tai-policy.yaml'}"
    )


def test_init_asks_on_a_terminal(here):
    answers = [
        "digit reader",  # system
        "read digits of order forms",  # purpose
        "a back office",  # context
        "clerks",  # users
        "customers",  # affected
        "minimal",  # risk class
        "no Annex III use",  # risk reason
        *[x for _ in range(6) for x in ("medium", "a wrong digit costs a return")],
        "none",  # group column
        "no attributes of the writer",  # group reason
        "false",  # personal data
        "single digits identify no one",
        "human-on-the-loop",
        "clerks watch the alarms",
        "gaussian_noise; contrast",
    ]
    result = _run("--interactive", input="\n".join(answers) + "\n")
    assert result.exit_code == 0, result.output
    requirements = load_requirements(here / "tai-requirements.yaml")
    assert requirements.system == "digit reader"
    assert requirements.perturbations == ("gaussian_noise", "contrast")
    assert {n: requirements.needs[n].level for n in ("privacy", "autonomy")} == {
        "privacy": "medium",
        "autonomy": "medium",
    }


def test_a_looser_policy_is_shown_and_refused_until_forced(here):
    assert _run(*OPTIONS).exit_code == 0
    policy = here / "tai-policy.yaml"
    policy.write_text(policy.read_text().replace("confidence: 0.99", "confidence: 0.95"))
    checked = _run("--check")
    assert checked.exit_code == 1
    assert checked.stderr.startswith(f"error: {policy} is looser than ")
    assert "`confidence: 0.95` must be >= 0.99: risk class is high" in checked.stderr
    shown = _run()
    assert "~ confidence: 0.95 -> 0.99 (stricter)" in shown.stdout and shown.exit_code == 1
    assert "confidence: 0.95" in policy.read_text()  # nothing changed
    forced = _run("--force")
    assert forced.exit_code == 0 and "confidence: 0.99" in policy.read_text()
    assert _run("--check").exit_code == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("--oversight", "human-out-of-the-loop"),
            "oversight.mode: 'human-out-of-the-loop' contradicts risk.class: 'high'",
        ),
        (("--risk-class", "severe"), "risk.class: 'severe' is not accepted"),
        (("--perturbation", "smudge"), "perturbations: 'smudge' is not a known corruption"),
        (("--need", "privacy=high"), "--need 'privacy=high' is not principle=level:reason"),
    ],
)
def test_a_contradictory_or_malformed_answer_is_one_line_and_writes_nothing(here, change, message):
    options = list(OPTIONS)
    flag, value = change
    at = options.index(flag) if flag != "--need" else options.index("--need") + 8
    if flag == "--need":
        options[at + 1] = value
    else:
        options[at + 1] = value
    result = _run(*options)
    assert result.exit_code == 1
    # one line per problem, the first after "error:"
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert not (here / "tai-requirements.yaml").exists()
    assert not (here / "tai-policy.yaml").exists()


def test_an_existing_requirements_file_is_not_replaced_without_force(here):
    assert _run(*OPTIONS).exit_code == 0
    again = _run(*OPTIONS[:-2], "--perturbation", "fog")
    assert again.exit_code == 1
    assert "tai-requirements.yaml exists; pass --force to replace it" in again.stderr
    assert yaml.safe_load((here / "tai-requirements.yaml").read_text())["perturbations"] == [
        "gaussian_noise",
        "contrast",
    ]
