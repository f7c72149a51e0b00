"""The README tells a newcomer the truth about what there is: every setting and every
command of the CLI is in it."""

from __future__ import annotations

import re

from infra.settings import Settings
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_every_setting_is_in_the_settings_table():
    table = README[README.index("## Settings") :]
    table = table[: table.index("\n## ", 5)]
    documented = set(re.findall(r"TAI_([A-Z0-9_]+)\b", table))
    fields = {name.upper() for name in Settings.model_fields}
    missing = sorted(fields - documented)
    assert not missing, f"settings missing from the README's table: {missing}"


def test_every_command_is_in_the_command_line_section():
    from flows.cli import app

    section = README[README.index("## The command line") :]
    section = section[: section.index("\n## ", 5)]
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    groups = {g.name: g.typer_instance for g in app.registered_groups}
    listed = [f"tai {c}" for c in commands] + [
        f"tai {group} {c.name or c.callback.__name__}"
        for group, sub in groups.items()
        for c in sub.registered_commands
    ]
    missing = [c for c in listed if c not in section]
    assert not missing, f"commands missing from the README: {missing}"
