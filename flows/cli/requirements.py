"""`tai init`: write the requirements (business and data understanding) and derive the gate
policy from them.

On a terminal `tai init` asks for each answer; otherwise (or with ``--no-interactive``)
the answers come from options. It writes the requirements file, then derives the policy
the requirements demand (:mod:`tai.gates.derivation`) and writes it where none exists.
When a policy exists, it shows what deriving again would change and overwrites it only
with ``--force``; ``--check`` only says whether the current policy is strict enough.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
import yaml

from flows.cli.common import cli_errors, fail
from flows.cli.common import settings as current_settings
from tai.check import Principle

app = typer.Typer()

LEVELS = ("low", "medium", "high")
RISK_CLASSES = ("minimal", "limited", "high", "unacceptable")
OVERSIGHT = ("human-in-the-loop", "human-on-the-loop", "human-out-of-the-loop")


@app.command()
@cli_errors
def init(
    system: Annotated[str | None, typer.Option(help="The AI system's name.")] = None,
    purpose: Annotated[str | None, typer.Option(help="Intended purpose (Art. 3(12)).")] = None,
    context: Annotated[str | None, typer.Option(help="Context of use: where, on what.")] = None,
    user: Annotated[list[str] | None, typer.Option(help="Who operates it (repeatable).")] = None,
    affected: Annotated[
        list[str] | None, typer.Option(help="Who is affected by it (repeatable).")
    ] = None,
    risk_class: Annotated[
        str | None, typer.Option(help=f"One of {', '.join(RISK_CLASSES)}.")
    ] = None,
    risk_reason: Annotated[str | None, typer.Option(help="Why that risk class.")] = None,
    need: Annotated[
        list[str] | None,
        typer.Option(help="principle=level:reason, e.g. 'privacy=high:patient images'."),
    ] = None,
    group_column: Annotated[
        str | None, typer.Option(help="metadata.csv column of the groups to protect, or none.")
    ] = None,
    group_reason: Annotated[str | None, typer.Option(help="Why those groups.")] = None,
    personal_data: Annotated[
        bool | None, typer.Option("--personal-data/--no-personal-data", help="Personal data?")
    ] = None,
    personal_data_reason: Annotated[str | None, typer.Option(help="Why (not).")] = None,
    oversight: Annotated[str | None, typer.Option(help=f"One of {', '.join(OVERSIGHT)}.")] = None,
    oversight_reason: Annotated[str | None, typer.Option(help="Why that oversight.")] = None,
    perturbation: Annotated[
        list[str] | None, typer.Option(help="A corruption the domain expects (repeatable).")
    ] = None,
    interactive: Annotated[
        bool | None,
        typer.Option("--interactive/--no-interactive", help="Ask (default: on a terminal)."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only say whether the policy meets them.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the policy.")] = False,
) -> None:
    """Write the requirements file and derive the gate policy from it."""
    settings = current_settings()
    from flows.preflight import check_corruptions
    from tai.evaluation.registry import metric_specs
    from tai.gates.derivation import check_policy_against, derive_policy, policy_diff
    from tai.gates.policy import parse_policy
    from tai.gates.requirements import load_requirements, parse_requirements

    check_corruptions(settings)  # plugins register their corruptions first
    path, policy_path = settings.requirements_file, settings.policy_file
    answers = {
        "system": system,
        "intended_purpose": purpose,
        "context_of_use": context,
        "users": user,
        "affected_persons": affected,
        "risk_class": risk_class,
        "risk_reason": risk_reason,
        "needs": need,
        "group_column": group_column,
        "group_reason": group_reason,
        "personal_data": personal_data,
        "personal_data_reason": personal_data_reason,
        "oversight": oversight,
        "oversight_reason": oversight_reason,
        "perturbations": perturbation,
    }
    given = any(v is not None for v in answers.values())
    if interactive is None:
        interactive = sys.stdin.isatty() and not check and not path.is_file()
    if given or interactive:
        document = _document(answers, ask=interactive)
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=88)
        requirements = parse_requirements(text, source=str(path))  # one-line errors
        if path.is_file() and not force:
            fail(f"{path} exists; pass --force to replace it, or edit it and run `tai init`")
        path.write_text(text)
        typer.echo(f"wrote {path}")
    else:
        requirements = load_requirements(path)
    specs = metric_specs()
    derived = derive_policy(requirements, specs)
    if not policy_path.is_file():
        policy_path.write_text(derived)
        typer.echo(f"derived the gate policy from {path}: wrote {policy_path}")
        return
    current = policy_path.read_text()
    problems = check_policy_against(
        requirements,
        parse_policy(current, specs, monitoring_specs=specs, source=str(policy_path)),
        specs,
    )
    if check:
        if problems:
            fail(f"{policy_path} is looser than {path} demands: " + "; ".join(problems))
        typer.echo(f"{policy_path} meets every requirement of {path}")
        return
    typer.echo(
        policy_diff(current, derived, current_source=str(policy_path), derived_source=str(path))
    )
    if force:
        policy_path.write_text(derived)
        typer.echo(f"wrote the derived policy to {policy_path}")
    elif problems:
        fail(
            f"{policy_path} is looser than {path} demands: {'; '.join(problems)}; run "
            "`tai init --force` to replace it with the derived policy"
        )
    else:
        typer.echo(f"{policy_path} meets every requirement; --force replaces it with the above")


def _document(answers: dict[str, Any], *, ask: bool) -> dict[str, Any]:
    """The requirements document from the options, asking for what is missing when ``ask``."""

    def value(key: str, prompt: str, default: str | None = None, choices=None) -> Any:
        got = answers[key]
        if got is None and ask:
            shown = f"{prompt} ({'/'.join(choices)})" if choices else prompt
            got = typer.prompt(shown, default=default)
        if got is None:
            option = key.replace("_", "-")
            fail(f"--{option} is missing: {prompt.lower()}; give it, or run on a terminal")
        return got

    def listed(key: str, prompt: str) -> list[str]:
        got = answers[key]
        if not got and ask:
            got = [s.strip() for s in typer.prompt(f"{prompt} (separate with ;)").split(";")]
        if not got:
            fail(f"--{key.replace('_', '-').rstrip('s')} is missing: {prompt.lower()}")
        return [g for g in got if g]

    return {
        "version": 1,
        "system": value("system", "Name of the AI system"),
        "intended_purpose": value("intended_purpose", "Intended purpose"),
        "context_of_use": value("context_of_use", "Context of use"),
        "users": listed("users", "Users"),
        "affected_persons": listed("affected_persons", "Affected persons"),
        "risk": {
            "class": value("risk_class", "EU AI Act risk class", "minimal", RISK_CLASSES),
            "reason": value("risk_reason", "Why this risk class"),
        },
        "needs": _needs(answers["needs"] or [], ask=ask),
        "protected_groups": {
            "column": value("group_column", "Metadata column of the groups to protect", "none"),
            "reason": value("group_reason", "Why these groups"),
        },
        "personal_data": {
            "involved": bool(
                value("personal_data", "Personal data involved (true/false)", "false")
                in (True, "true", "yes", "y")
            ),
            "reason": value("personal_data_reason", "Why (not) personal data"),
        },
        "oversight": {
            "mode": value("oversight", "Human oversight", "human-on-the-loop", OVERSIGHT),
            "reason": value("oversight_reason", "Why this oversight"),
        },
        "perturbations": answers["perturbations"]
        or (
            [
                p.strip()
                for p in typer.prompt(
                    "Expected perturbations (corruptions, separate with ;)",
                    default="gaussian_noise; gaussian_blur; contrast; jpeg_compression",
                ).split(";")
            ]
            if ask
            else []
        ),
    }


def _needs(items: list[str], *, ask: bool) -> dict[str, dict[str, str]]:
    """``principle=level:reason`` options as the needs mapping, asking for the rest."""
    needs: dict[str, dict[str, str]] = {}
    for item in items:
        principle, sep, rest = item.partition("=")
        level, colon, reason = rest.partition(":")
        if not sep or not colon:
            fail(
                f"--need {item!r} is not principle=level:reason; write e.g. "
                "--need 'privacy=high:the images show patients'"
            )
        needs[principle.strip()] = {"level": level.strip(), "reason": reason.strip()}
    for principle in Principle:
        if principle.value in needs or not ask:
            continue
        level = typer.prompt(f"{principle.title} need ({'/'.join(LEVELS)})", default="medium")
        reason = typer.prompt(f"Why is the {principle.title} need {level}")
        needs[principle.value] = {"level": level, "reason": reason}
    return needs
