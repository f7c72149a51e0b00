"""Deployment files that cannot run here are validated against their published schemas."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECK = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
needs_checker = pytest.mark.skipif(CHECK is None, reason="check-jsonschema is not installed")


def _validate(schema: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHECK, "--builtin-schema", schema, str(path)], capture_output=True, text=True, timeout=60
    )


@needs_checker
def test_docker_compose_follows_the_compose_specification():
    result = _validate("vendor.compose-spec", ROOT / "infra" / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_checker
def test_ci_workflow_follows_the_github_workflow_schema():
    result = _validate("vendor.github-workflows", ROOT / ".github" / "workflows" / "ci.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_checker
def test_the_validator_rejects_a_broken_compose_file(tmp_path):
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  web:\n    ports: 8000\n")
    assert _validate("vendor.compose-spec", broken).returncode != 0


def test_every_service_the_readme_names_is_in_the_compose_file():
    services = set(yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())["services"])
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running in production", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.MULTILINE))
    assert named, "the README's production section names no compose service"
    assert named <= services, f"named in the README but not in compose: {named - services}"
    assert services <= named, f"in compose but not explained in the README: {services - named}"


def test_ci_calls_the_readme_test_command():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = workflow["jobs"]["test"]["steps"]
    assert any(step.get("run") == "make test" for step in steps)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
