"""The layers of DESIGN.md hold: every import points down, never up.

From the bottom: the core modules of ``tai`` (the check unit, input checks, tag names),
then ``tai.data``, ``tai.modeling``, ``tai.principles``, ``tai.monitoring``,
``tai.evaluation``, ``tai.gates``, ``tai.report``, then ``callbacks``, ``infra`` and
``flows``. Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# Lowest first. A module may import its own layer and the layers below it.
LAYERS = (
    "tai",  # tai/*.py: check.py, inputs.py, tags.py
    "tai.data",
    "tai.modeling",
    "tai.principles",
    "tai.monitoring",
    "tai.evaluation",
    "tai.gates",
    "tai.report",
    "callbacks",
    "infra",
    "flows",
)
PROJECT = ("tai", "callbacks", "infra", "flows")
# Outside systems the domain never talks to (DESIGN.md: "no Prefect, no MLflow, no lakeFS").
FORBIDDEN_IN_TAI = ("prefect", "mlflow", "lakefs", "oxen", "oxenai", "infra", "flows")


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the most specific layer that ``module`` belongs to."""
    best = -1
    for index, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            if best < 0 or len(layer) > len(LAYERS[best]):
                best = index
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = (package or module_name(path)).split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            # `from tai import check` names a module, not only a package
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if base in PROJECT]
    return found


def project_files() -> list[Path]:
    return sorted(p for package in PROJECT for p in (REPO_ROOT / package).rglob("*.py"))


def test_the_layers_cover_every_package_of_the_project():
    for path in project_files():
        assert layer_of(module_name(path)) >= 0, path


@pytest.mark.parametrize("path", project_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_imports_point_down(path):
    mine = layer_of(module_name(path))
    upward = []
    for line, target in imports_of(path):
        if target.split(".")[0] not in PROJECT:
            continue
        theirs = layer_of(target)
        if theirs > mine:
            upward.append(f"line {line}: {target} ({LAYERS[theirs]} is above {LAYERS[mine]})")
    assert not upward, f"{path.relative_to(REPO_ROOT)} imports upward:\n" + "\n".join(upward)


@pytest.mark.parametrize(
    "path",
    sorted((REPO_ROOT / "tai").rglob("*.py")),
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_the_domain_talks_to_no_outside_system(path):
    bad = [
        f"line {line}: {target}"
        for line, target in imports_of(path)
        if target.split(".")[0] in FORBIDDEN_IN_TAI
    ]
    assert not bad, f"{path.relative_to(REPO_ROOT)} imports an outside system: {bad}"


def test_no_module_of_the_domain_chooses_a_matplotlib_backend_at_import():
    """Choosing a backend at import changed it for everyone who imported the module."""
    offenders = [
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "tai").rglob("*.py")
        if "matplotlib.use(" in p.read_text() or "import matplotlib.pyplot" in p.read_text()
    ]
    assert not offenders


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself: an import of the report layer from the data stage is upward."""
    assert layer_of("tai.report.trust_report") > layer_of("tai.data.card")
    assert layer_of("tai.modeling.datamodule") > layer_of("tai.data.card")
    assert layer_of("tai.principles.reliability.calibration") < layer_of("tai.gates.policy")
    assert layer_of("tai.check") == 0


def test_the_readme_layout_names_every_package_of_the_domain():
    readme = (REPO_ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    packages = sorted(
        p.parent.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "tai").glob("*/__init__.py")
    )
    assert packages
    missing = [p for p in packages if f"`{p}/`" not in layout]
    assert not missing, f"README's layout section does not describe {missing}"
