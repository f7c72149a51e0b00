"""The requirements file: what the classifier is for, and how much each principle needs.

Business and data understanding, written down once, before any gate: the intended
purpose and context of use, who uses the system and who is affected by it, its EU AI Act
risk class, a protection need per principle of trustworthy AI, the groups to protect, whether
personal data is involved, how people oversee it, and the input perturbations the domain
expects. :mod:`tai.gates.derivation` turns it into the gate policy (``derive_policy``) and
refuses a policy looser than it demands (``check_policy_against``). A requirements file
looks like this (``tai-requirements.yaml`` at the repository root is the demo's)::

    version: 1
    system: digit reader for order forms
    intended_purpose: read the handwritten digits of order forms into the order system
    context_of_use: scanned paper forms, one 28x28 grey image per digit box
    users: [order-entry clerks]
    affected_persons: [customers whose orders are read]
    risk:
      class: minimal            # minimal | limited | high | unacceptable
      reason: not an Annex III use, no prohibited practice, no interaction with persons
    needs:                      # low | medium | high, each with its reason
      reliability: {level: medium, reason: a misread quantity ships the wrong amount}
      transparency: {level: medium, reason: ...}
      fairness: {level: medium, reason: ...}
      privacy: {level: low, reason: ...}
      security: {level: medium, reason: ...}
      autonomy: {level: medium, reason: ...}
    protected_groups: {column: none, reason: the forms carry no attribute of the writer}
    personal_data: {involved: false, reason: ...}
    oversight: {mode: human-on-the-loop, reason: ...}
    perturbations: [gaussian_noise, gaussian_blur, contrast, jpeg_compression]

The risk classes are the EU AI Act's (Regulation (EU) 2024/1689): ``unacceptable`` are
the prohibited AI practices of Art. 5, which may not be placed on the market, put into
service or used, so such a file is refused; ``high`` the high-risk systems of Art. 6
(safety components under Annex I, the uses of Annex III), for which Art. 9 to 15 apply;
``limited`` the systems with the transparency obligations of Art. 50 alone; ``minimal``
everything else (voluntary codes of conduct, Art. 95). The oversight modes: a person
confirms every output (``human-in-the-loop``), watches the system and its alarms and can
intervene (``human-on-the-loop``), or there is no person in operation
(``human-out-of-the-loop``).

Validation: the document is checked against ``tai/gates/requirements_schema.json`` (JSON
Schema 2020-12), then for contradictions and against the registered corruptions. Every
error is one line that names the field, the value and what is accepted; all of them are
reported at once (:class:`RequirementsError`, one line each):

- ``risk.class: unacceptable`` (Art. 5: may not be placed on the market);
- ``risk.class: high`` with ``oversight.mode: human-out-of-the-loop`` (Art. 14(1): a
  high-risk system is overseen by natural persons while in use);
- ``risk.class: high`` with a ``low`` need for reliability or security (Art. 15),
  transparency (Art. 13) or autonomy (Art. 14);
- ``needs.autonomy.level: high`` with ``human-out-of-the-loop``;
- ``personal_data.involved: true`` with ``needs.privacy.level: low`` (GDPR Art. 5(1)(f);
  a model can leak its training images through membership inference);
- a perturbation that is not a registered corruption; no perturbation at all while the
  reliability need gates the accuracy under corruption (medium or high);
- ``protected_groups.column: path`` (that column identifies the image, not a group).

Whether the data has the group column is only known with the data: the pipeline calls
:func:`check_group_column` with the columns of the dataset's ``metadata.csv``; and
:func:`check_corruption_list` holds the robustness check's corruption list to the
expected perturbations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tai.check import Principle

SUPPORTED_VERSIONS = (1,)
#: The EU AI Act's risk classes, from least to most regulated.
RISK_CLASSES = ("minimal", "limited", "high", "unacceptable")
#: Protection needs, from least to most.
LEVELS = ("low", "medium", "high")
#: How people oversee the system in use.
OVERSIGHT_MODES = ("human-in-the-loop", "human-on-the-loop", "human-out-of-the-loop")
#: The principles a need is stated for: the values of :class:`tai.check.Principle`.
PRINCIPLES = tuple(p.value for p in Principle)

#: What the risk class obliges the provider to, for the trust report (engineering aid).
RISK_OBLIGATIONS: dict[str, tuple[str, ...]] = {
    "minimal": (
        "Art. 4: AI literacy of the staff who operate the system",
        "Art. 95: voluntary codes of conduct",
    ),
    "limited": (
        "Art. 4: AI literacy of the staff who operate the system",
        "Art. 50: tell persons they interact with an AI system or that content is generated",
    ),
    "high": (
        "Art. 9: risk management system",
        "Art. 10: data and data governance",
        "Art. 11 and Annex IV: technical documentation",
        "Art. 12: record-keeping (logs)",
        "Art. 13: transparency and instructions for use",
        "Art. 14: human oversight",
        "Art. 15: accuracy, robustness and cybersecurity",
    ),
    "unacceptable": ("Art. 5: prohibited AI practice; may not be placed on the market",),
}

_TOP_KEYS = (
    "version",
    "system",
    "intended_purpose",
    "context_of_use",
    "users",
    "affected_persons",
    "risk",
    "needs",
    "protected_groups",
    "personal_data",
    "oversight",
    "perturbations",
)

# What each structured field accepts, for the one-line messages.
_SHAPES = {
    "risk": "`risk: {class: minimal, reason: ...}`",
    "needs": "a mapping from each principle to `{level: low|medium|high, reason: ...}`",
    "protected_groups": "`protected_groups: {column: <metadata.csv column> or none, reason: ...}`",
    "personal_data": "`personal_data: {involved: true|false, reason: ...}`",
    "oversight": "`oversight: {mode: human-on-the-loop, reason: ...}`",
    "perturbations": "a list of corruption names, e.g. `[gaussian_noise, contrast]`",
    "users": "a non-empty list of texts, e.g. `[order-entry clerks]`",
    "affected_persons": "a non-empty list of texts, e.g. `[customers]`",
}


class RequirementsError(ValueError):
    """The requirements file is malformed or contradicts itself; one line per problem."""


@dataclass(frozen=True)
class Need:
    """The protection need of one principle: ``low``, ``medium`` or ``high``, and why."""

    level: str
    reason: str

    @property
    def rank(self) -> int:
        """0 for low, 1 for medium, 2 for high."""
        return LEVELS.index(self.level)


@dataclass(frozen=True)
class Needs:
    """A :class:`Need` for every principle; ``needs[Principle.FAIRNESS]`` or
    ``needs["fairness"]`` reads one."""

    reliability: Need
    transparency: Need
    fairness: Need
    privacy: Need
    security: Need
    autonomy: Need

    def __getitem__(self, principle: Principle | str) -> Need:
        return getattr(self, Principle(principle).value)

    def items(self) -> Iterator[tuple[Principle, Need]]:
        """``(principle, need)`` in the order of :class:`tai.check.Principle`."""
        return ((p, self[p]) for p in Principle)


@dataclass(frozen=True)
class Requirements:
    """A parsed, consistent requirements file.

    Attributes:
        version: the format's version.
        system: the system's name.
        intended_purpose: the use the provider intends (EU AI Act Art. 3(12)).
        context_of_use: where, on what inputs and under which conditions.
        users: who operates the system or acts on its output.
        affected_persons: who is affected by its output.
        risk_class: ``minimal``, ``limited`` or ``high`` (``unacceptable`` is refused).
        risk_reason: why.
        needs: the protection need of each principle.
        group_column: the ``metadata.csv`` column of the groups to protect, or None.
        group_reason: why (or why none).
        personal_data: whether personal data is involved.
        personal_data_reason: why (or why not).
        oversight: ``human-in-the-loop``, ``human-on-the-loop`` or ``human-out-of-the-loop``.
        oversight_reason: why.
        perturbations: the corruptions the domain expects: the robustness check's list.
        sha256: sha256 of the file's bytes (lineage tag ``tai.requirements.sha256``).
        source: where it was read from, for messages.
    """

    version: int
    system: str
    intended_purpose: str
    context_of_use: str
    users: tuple[str, ...]
    affected_persons: tuple[str, ...]
    risk_class: str
    risk_reason: str
    needs: Needs
    group_column: str | None
    group_reason: str
    personal_data: bool
    personal_data_reason: str
    oversight: str
    oversight_reason: str
    perturbations: tuple[str, ...]
    sha256: str
    source: str = "<requirements>"

    @property
    def corruptions(self) -> tuple[str, ...]:
        """The robustness check's corruption list (``CheckOptions.corruptions``)."""
        return self.perturbations

    @property
    def obligations(self) -> tuple[str, ...]:
        """What the risk class obliges the provider to (EU AI Act articles)."""
        return RISK_OBLIGATIONS[self.risk_class]

    def summary(self) -> dict[str, Any]:
        """The JSON-ready requirements section of the trust report."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "system": self.system,
            "intended_purpose": self.intended_purpose,
            "context_of_use": self.context_of_use,
            "users": list(self.users),
            "affected_persons": list(self.affected_persons),
            "risk": {
                "class": self.risk_class,
                "reason": self.risk_reason,
                "obligations": list(self.obligations),
            },
            "needs": {
                p.value: {"title": p.title, "level": n.level, "reason": n.reason}
                for p, n in self.needs.items()
            },
            "protected_groups": {"column": self.group_column, "reason": self.group_reason},
            "personal_data": {"involved": self.personal_data, "reason": self.personal_data_reason},
            "oversight": {"mode": self.oversight, "reason": self.oversight_reason},
            "perturbations": list(self.perturbations),
        }


def quote(reason: str, width: int = 60) -> str:
    """``reason`` in single quotes on one line, cut to ``width`` characters with ``...``."""
    text = " ".join(reason.split())
    if len(text) > width:
        cut = text[: width - 3]
        if " " in cut and not text[width - 3].isspace():
            cut = cut.rsplit(" ", 1)[0]
        text = cut.rstrip(" ,;:") + "..."
    return f"'{text}'"


# ------------------------------------------------------------------------------ parsing


def parse_requirements(
    text: str | bytes,
    *,
    source: str = "<requirements>",
    corruptions: Collection[str] | None = None,
) -> Requirements:
    """Parse and validate a requirements document.

    Args:
        text: the document (its bytes are what ``sha256`` hashes; text is UTF-8 encoded).
        source: the file's name, at the start of every message.
        corruptions: the corruption names a perturbation may use; default the registered
            ones, :func:`tai.principles.reliability.corruptions.available_corruptions`
            (load the plugins of ``TAI_CORRUPTION_PLUGINS`` first).

    Raises:
        RequirementsError: one line per problem (see the module docstring): malformed
            YAML, a document that does not follow ``requirements_schema.json``, a
            contradiction, an unknown perturbation.
    """
    raw = text.encode() if isinstance(text, str) else bytes(text)
    try:
        doc = yaml.safe_load(raw.decode())
    except UnicodeDecodeError:
        raise RequirementsError(f"{source}: not UTF-8 text; save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise RequirementsError(f"{source}: not valid YAML ({detail}); fix the syntax") from None
    errors = schema_errors(doc, source)
    if errors:
        raise RequirementsError("\n".join(errors))
    requirements = _build(doc, hashlib.sha256(raw).hexdigest(), source)
    errors = contradictions(requirements, corruptions=corruptions)
    if errors:
        raise RequirementsError("\n".join(errors))
    return requirements


def load_requirements(
    path: str | Path, *, corruptions: Collection[str] | None = None
) -> Requirements:
    """Read and validate a requirements file (see :func:`parse_requirements`); its
    ``sha256`` is that of the file's bytes.

    Raises:
        RequirementsError: the file does not exist, or as :func:`parse_requirements`.
    """
    path = Path(path)
    if not path.is_file():
        raise RequirementsError(
            f"requirements file {path} does not exist; write one (tai-requirements.yaml at "
            "the repository root is an example)"
        )
    return parse_requirements(path.read_bytes(), source=str(path), corruptions=corruptions)


def _build(doc: dict[str, Any], sha256: str, source: str) -> Requirements:
    needs = doc["needs"]
    column = doc["protected_groups"]["column"]
    if column is not None and column.strip().lower() == "none":
        column = None
    return Requirements(
        version=doc["version"],
        system=doc["system"].strip(),
        intended_purpose=" ".join(doc["intended_purpose"].split()),
        context_of_use=" ".join(doc["context_of_use"].split()),
        users=tuple(u.strip() for u in doc["users"]),
        affected_persons=tuple(a.strip() for a in doc["affected_persons"]),
        risk_class=doc["risk"]["class"],
        risk_reason=" ".join(doc["risk"]["reason"].split()),
        needs=Needs(
            **{p: Need(needs[p]["level"], " ".join(needs[p]["reason"].split())) for p in PRINCIPLES}
        ),
        group_column=column,
        group_reason=" ".join(doc["protected_groups"]["reason"].split()),
        personal_data=doc["personal_data"]["involved"],
        personal_data_reason=" ".join(doc["personal_data"]["reason"].split()),
        oversight=doc["oversight"]["mode"],
        oversight_reason=" ".join(doc["oversight"]["reason"].split()),
        perturbations=tuple(doc["perturbations"]),
        sha256=sha256,
        source=source,
    )


# --------------------------------------------------------------------- contradictions


# Art. 13 to 15 for high-risk systems: the principle whose need may not be low, and why.
_HIGH_RISK_FLOORS = {
    "reliability": "Art. 15(1): an appropriate level of accuracy and robustness",
    "security": "Art. 15(5): resilience against attempts to alter the output",
    "transparency": "Art. 13(1): deployers must be able to interpret the output",
    "autonomy": "Art. 14(4): persons must be able to override or not use the output",
}


def contradictions(
    requirements: Requirements, *, corruptions: Collection[str] | None = None
) -> list[str]:
    """One line per contradiction of a schema-valid document (empty when consistent).

    ``corruptions`` are the known corruption names (default: the registered ones).
    """
    r, src = requirements, requirements.source
    errors: list[str] = []
    if r.risk_class == "unacceptable":
        errors.append(
            f"{src}: risk.class: 'unacceptable' is refused: an AI practice prohibited by EU "
            "AI Act Art. 5 may not be placed on the market, put into service or used, and "
            "no gate can change that; change the intended purpose, or use minimal, limited "
            "or high"
        )
    if r.risk_class == "high":
        if r.oversight == "human-out-of-the-loop":
            errors.append(
                f"{src}: oversight.mode: 'human-out-of-the-loop' contradicts risk.class: "
                "'high': EU AI Act Art. 14(1) requires a high-risk system to be overseen by "
                "natural persons while in use; use human-in-the-loop or human-on-the-loop"
            )
        for principle, article in _HIGH_RISK_FLOORS.items():
            if r.needs[principle].level == "low":
                errors.append(
                    f"{src}: needs.{principle}.level: 'low' contradicts risk.class: 'high' "
                    f"(EU AI Act {article}); use medium or high"
                )
    if r.needs.autonomy.level == "high" and r.oversight == "human-out-of-the-loop":
        errors.append(
            f"{src}: oversight.mode: 'human-out-of-the-loop' contradicts needs.autonomy.level: "
            "'high' (people must keep control, yet none oversees the system); use "
            "human-in-the-loop or human-on-the-loop, or lower the autonomy need"
        )
    if r.personal_data and r.needs.privacy.level == "low":
        errors.append(
            f"{src}: needs.privacy.level: 'low' contradicts personal_data.involved: true: a "
            "model can leak its training data through membership inference (GDPR Art. "
            "5(1)(f): integrity and confidentiality); use medium or high"
        )
    if r.group_column == "path":
        errors.append(
            f"{src}: protected_groups.column: 'path' identifies each image in metadata.csv, "
            "it is not a group; name a group column (e.g. writer_age_band) or none"
        )
    errors += _perturbation_errors(r, corruptions)
    return errors


def _perturbation_errors(r: Requirements, corruptions: Collection[str] | None) -> list[str]:
    if corruptions is None:
        from tai.principles.reliability.corruptions import available_corruptions

        corruptions = available_corruptions()
    known = list(corruptions)
    errors = [
        f"{r.source}: perturbations: {name!r} is not a known corruption; accepted: "
        f"{', '.join(known)} (or register your own with TAI_CORRUPTION_PLUGINS)"
        for name in r.perturbations
        if name not in known
    ]
    if not r.perturbations and r.needs.reliability.level != "low":
        errors.append(
            f"{r.source}: perturbations: [] but needs.reliability.level: "
            f"{r.needs.reliability.level!r} gates the accuracy under the expected "
            f"perturbations; name at least one of: {', '.join(known)}"
        )
    return errors


def check_group_column(requirements: Requirements, columns: Collection[str]) -> None:
    """Check that the data has the group column the requirements name.

    Args:
        columns: the columns of the dataset's ``metadata.csv`` (empty when it has none).

    Raises:
        RequirementsError: ``protected_groups.column`` is not one of ``columns``.
    """
    column = requirements.group_column
    if column is None or column in columns:
        return
    groups = sorted(c for c in columns if c != "path")
    have = (
        f"its group columns are {', '.join(groups)}"
        if groups
        else "the dataset has no metadata.csv with a group column"
    )
    raise RequirementsError(
        f"{requirements.source}: protected_groups.column: {column!r} is not a column of the "
        f"data's metadata.csv ({have}); add the column to metadata.csv, or name one of its "
        "columns, or `column: none`"
    )


def check_corruption_list(requirements: Requirements, corruptions: Collection[str]) -> None:
    """Check that the robustness check runs every perturbation the domain expects.

    Args:
        corruptions: the corruptions the evaluation runs (``CheckOptions.corruptions``,
            ``TAI_CORRUPTIONS``).

    Raises:
        RequirementsError: an expected perturbation is not in ``corruptions``.
    """
    missing = [p for p in requirements.perturbations if p not in corruptions]
    if missing:
        raise RequirementsError(
            f"{requirements.source}: perturbations {', '.join(map(repr, missing))} are "
            f"expected but the robustness check runs only {', '.join(corruptions) or 'none'}; "
            "run the requirements' perturbations (TAI_CORRUPTIONS="
            f"{json.dumps(list(requirements.perturbations))})"
        )


# ----------------------------------------------------------------------------- schema


@cache
def requirements_schema() -> dict[str, Any]:
    """The JSON Schema of a requirements document (``tai/gates/requirements_schema.json``)."""
    text = resources.files("tai.gates").joinpath("requirements_schema.json").read_text()
    return json.loads(text)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(requirements_schema())


def schema_errors(doc: object, source: str) -> list[str]:
    """One line per schema error of ``doc``, in document order, duplicates dropped."""
    errors = sorted(_validator().iter_errors(doc), key=_document_order)
    return list(dict.fromkeys(_message(e, source) for e in errors))


def _document_order(error: jsonschema.ValidationError) -> tuple:
    path = [str(p) for p in error.absolute_path]
    top = _TOP_KEYS.index(path[0]) if path and path[0] in _TOP_KEYS else -1
    return top, path, error.validator != "required"


def _field(path: list) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")


def _message(error: jsonschema.ValidationError, source: str) -> str:
    path = list(error.absolute_path)
    kind, value = error.validator, error.instance
    where = f"{source}: {_field(path)}" if path else source
    if kind == "additionalProperties":
        allowed = list(error.schema["properties"])
        unexpected = sorted(set(value) - set(allowed))
        if path == ["needs"]:
            return (
                f"{where}: unknown principle {', '.join(map(repr, unexpected))}; the "
                f"principles are: {', '.join(PRINCIPLES)}"
            )
        what = "top-level keys" if not path else "keys"
        return f"{where}: unexpected {what} {unexpected}; allowed: {', '.join(allowed)}"
    if kind == "required":
        missing = [k for k in error.validator_value if k not in value]
        if path == ["needs"]:
            return (
                f"{where}: no need stated for {', '.join(missing)}; give every principle "
                f"({', '.join(PRINCIPLES)}) a level (low, medium or high) and a reason"
            )
        if path[:1] == ["needs"] and missing == ["reason"]:
            return (
                f"{where}: a need without a reason; add `reason:` (who is harmed, and how, "
                f"if {path[1]} fails)"
            )
        keys = ", ".join(f"`{k}`" for k in missing)
        if not path:
            return f"{source}: missing {keys}; a requirements file states: {', '.join(_TOP_KEYS)}"
        return f"{where}: missing {keys}; write {_SHAPES.get(str(path[0]), 'it')}"
    if kind == "enum":
        accepted = ", ".join(str(v) for v in error.validator_value)
        if path == ["version"]:
            return f"{where}: requirements version {value!r} is not supported; use 1"
        extra = ""
        if path == ["risk", "class"]:
            extra = (
                " (EU AI Act: unacceptable = prohibited practice, Art. 5; high = Art. 6 with "
                "Annex I or III; limited = transparency obligations of Art. 50; minimal = "
                "any other)"
            )
        return f"{where}: {value!r} is not accepted; use one of: {accepted}{extra}"
    if kind == "pattern":  # a text that is empty or only blanks
        if path[:1] == ["needs"]:
            return f"{where}: empty; say who is harmed, and how, if {path[1]} fails"
        return f"{where}: empty; write a sentence"
    if kind == "minItems":
        return f"{where}: empty; write {_SHAPES.get(str(path[0]), 'at least one item')}"
    if kind == "uniqueItems":
        seen: set[str] = set()
        twice = [v for v in value if v in seen or seen.add(v)]
        return f"{where}: {', '.join(map(repr, twice))} listed twice; name each once"
    if kind == "minLength":
        return f"{where}: empty; name a metadata.csv column, or write `none`"
    if kind == "type":
        return f"{where}: {value!r} {_type_hint(path, error.validator_value)}"
    return f"{where}: {error.message}"


def _type_hint(path: list, expected: object) -> str:
    if not path:
        return f"is not a mapping; a requirements file is a mapping of {', '.join(_TOP_KEYS)}"
    top = str(path[0])
    if top == "needs" and len(path) == 2:
        return "must be a mapping `{level: low|medium|high, reason: ...}`"
    if len(path) == 1 and top in _SHAPES:
        return f"must be {_SHAPES[top]}"
    if expected == "boolean":
        return "must be true or false"
    if expected == ["string", "null"]:
        return "must be a metadata.csv column name or none"
    if expected == "string":
        return "must be a text"
    return f"must be a {expected}"
