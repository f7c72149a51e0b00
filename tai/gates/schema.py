"""The JSON Schema of a policy document and the one-line messages its errors become.

The document is checked against ``tai/gates/policy_schema.json`` (JSON Schema 2020-12:
structure, types, accepted values, no unknown keys); each error names the gate, the key,
the bad value and what is accepted.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

_SECTIONS = {"gates": "gate", "champion": "champion gate", "monitoring": "monitoring rule"}


_ITEM_SHAPES = {
    "gates": "a mapping with `metric` and `min` or `max`",
    "champion": "a mapping with `metric` and `margin` or `require: superior`",
    "monitoring": "a mapping with `metric` and `min` or `max`",
}


@cache
def policy_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document (``tai/gates/policy_schema.json``)."""
    return json.loads(resources.files("tai.gates").joinpath("policy_schema.json").read_text())


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(policy_schema())


# Order of the schema errors of one item: the most basic first (a key-level error ranks 5).
_PRIORITY = {"type": 0, "additionalProperties": 1, "required": 2, "oneOf": 9}


_TOP_ORDER = {
    key: i
    for i, key in enumerate(
        ("version", "confidence", "gates", "champion", "monitoring", "approval")
    )
}


def schema_errors(doc: object, source: str) -> list[str]:
    """One line per schema error of ``doc``, in document order, duplicates dropped."""
    errors = sorted(_validator().iter_errors(doc), key=_document_order)
    return list(dict.fromkeys(_schema_message(e, doc, source) for e in errors))


def _document_order(error: jsonschema.ValidationError) -> tuple:
    path = list(error.absolute_path)
    top = _TOP_ORDER.get(path[0], len(_TOP_ORDER)) if path else -1
    index = path[1] if len(path) > 1 and isinstance(path[1], int) else -1
    rank = _PRIORITY.get(error.validator, 5) if len(path) <= 2 else 5
    return top, index, rank, [str(p) for p in path]


def _schema_message(error: jsonschema.ValidationError, doc: Any, source: str) -> str:
    path = list(error.absolute_path)
    kind, value = error.validator, error.instance
    if not path:
        if kind == "additionalProperties":
            allowed = list(error.schema["properties"])
            unexpected = sorted(set(value) - set(allowed))
            return (
                f"{source}: unexpected top-level keys {unexpected}; allowed: {', '.join(allowed)}"
            )
        return f"{source}: expected a mapping with `version` and a list `gates`"
    top = path[0]
    if top == "version":
        return f"{source}: policy version {value!r} is not supported; use 1"
    if top == "confidence":
        return (
            f"{source}: `confidence: {value!r}` must be a number in the open interval "
            "(0.5, 1), e.g. `confidence: 0.95`"
        )
    if top == "approval":
        return _approval_message(error, path, source)
    section = _SECTIONS[top]
    if len(path) == 1:
        kind_of = {"gates": "gates", "champion": "comparison gates"}.get(top, "rules")
        return f"{source}: `{top}` must be a non-empty list of {kind_of}"
    where = f"{source}: {section} {path[1] + 1}"
    item = doc[top][path[1]]
    if isinstance(item, dict) and isinstance(item.get("metric"), str):
        where += f" ({item['metric']})"
    if len(path) == 2:
        return _item_message(error, top, where)
    key = path[2]
    if kind == "enum":
        accepted = ", ".join(str(v) for v in error.validator_value)
        return f"{where}: `{key}: {value!r}` is not accepted; use one of: {accepted}"
    if kind == "type" and error.validator_value == "number":
        what = "threshold " if key in ("min", "max") else ""
        example = 0.01 if key == "margin" else 0.95
        if isinstance(value, str) and _is_number(value):
            # YAML 1.1 (PyYAML) reads 1e-3 as text: a float needs a dot, as in 1.0e-3.
            example = float(value)
        return (
            f"{where}: {what}`{key}: {value!r}` is not a finite number; write e.g. "
            f"`{key}: {example!r}`"
        )
    if kind == "type":
        return f"{where}: `{key}: {value!r}` must be a {error.validator_value}"
    if kind == "minimum":
        return (
            f"{where}: `{key}: {value!r}` must be >= 0: the margin is how much worse than the "
            "champion the challenger may be"
        )
    return f"{where}: `{key}`: {error.message}"


def _approval_message(error: jsonschema.ValidationError, path: list, source: str) -> str:
    shape = "`approval: {required: true, timeout_s: 86400}`"
    if len(path) == 1:
        if error.validator == "additionalProperties":
            unexpected = sorted(set(error.instance) - {"required", "timeout_s"})
            return f"{source}: approval: unexpected keys {unexpected}; allowed: required, timeout_s"
        return f"{source}: `approval` must be a mapping, e.g. {shape}"
    key, value = path[1], error.instance
    if key == "required":
        return f"{source}: approval: `required: {value!r}` must be true or false"
    return (
        f"{source}: approval: `timeout_s: {value!r}` must be a whole number of seconds >= 1, "
        "e.g. `timeout_s: 86400` (a day)"
    )


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _item_message(error: jsonschema.ValidationError, top: str, where: str) -> str:
    if error.validator == "additionalProperties":
        allowed = list(error.schema["properties"])
        unexpected = sorted(set(error.instance) - set(allowed))
        return f"{where}: unexpected keys {unexpected}; allowed: {', '.join(allowed)}"
    if error.validator == "oneOf":
        return f"{where}: give exactly one of `min` or `max`"
    return f"{where}: expected {_ITEM_SHAPES[top]}"
