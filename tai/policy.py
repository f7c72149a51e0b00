"""Gate policies: a YAML file of thresholds on TAI-report metrics, and their evaluation.

A policy file looks like this::

    version: 1
    gates:
      - metric: accuracy
        min: 0.97
        why: the model must be at least as good as the manual process
      - metric: ece
        max: 0.05

Each gate names one metric of the TAI report's ``metrics`` section and exactly one bound,
``min`` (value >= bound passes) or ``max`` (value <= bound passes). The policy's hash
(sha256 of the file's bytes) goes into the lineage of every model version it judged.

Confidence bounds. A point estimate on a finite test set is noisy; a gate can judge a
bound of the metric's confidence interval instead::

    version: 1
    confidence: 0.95          # two-sided level of every interval; default 0.95
    gates:
      - metric: accuracy
        min: 0.97
        use: lower            # the lower 95% bound must be >= 0.97
      - metric: ece
        max: 0.03
        use: upper            # the upper 95% bound must be <= 0.03

``use`` is ``point`` (the default), ``lower`` or ``upper``. ``use: lower`` with ``min``
and ``use: upper`` with ``max`` are the conservative choices: the gate passes only if the
evaluation is confident the metric meets its threshold. The evaluation supplies each
bound as ``bounds={"ece": (lower, upper)}`` to :func:`evaluate_gates`, at the level
:attr:`GatePolicy.confidence`; :meth:`GatePolicy.bound_metrics` lists the metrics that
need one. A gate whose bound was not supplied fails and says so. One bound of a two-sided
``c`` interval is a one-sided test at level ``(1 + c) / 2``.

Comparisons with the champion. Gates in the ``champion`` section judge the paired
difference ``challenger - champion`` of one metric on the same test samples (see
:mod:`tai.significance`), by a bound of its confidence interval::

    champion:
      - metric: accuracy
        margin: 0.005         # non-inferiority: lower bound of the difference >= -0.005
        why: a retrain must not lose accuracy, beyond noise and half a point
      - metric: ece
        better: lower
        require: superior     # upper bound of the difference < 0: significantly better

- ``require: non-inferior`` (the default when ``margin`` is given) with ``margin: m >= 0``:
  the challenger may be worse than the champion by at most ``m``. For a higher-is-better
  metric the lower bound of the difference must be ``>= -m``; for a lower-is-better one
  the upper bound must be ``<= m``.
- ``require: superior`` (no margin): the challenger must be significantly better: the
  lower bound ``> 0`` (higher is better) or the upper bound ``< 0`` (lower is better).
- Which way is better comes from ``better: higher | lower``, or, when omitted, from an
  absolute gate on the same metric (``min``: higher, ``max``: lower).

The evaluation supplies the comparisons as ``comparisons={"accuracy": PairedDifference}``
(:meth:`GatePolicy.comparison_metrics` lists them). ``comparisons=None`` means there is no
champion yet: the comparison gates are skipped ("no champion yet: judged on absolute
gates only") and the first model is judged on the absolute gates alone. A champion
without a comparison that a gate needs fails that gate.

Human approval. A policy may require a person to approve a version that passed every
gate before it becomes champion (EU AI Act Art. 14)::

    approval:
      required: true
      timeout_s: 86400        # no decision within a day rejects the version

Validation: the document is checked against ``tai/policy_schema.json`` (JSON Schema
2020-12: structure, types, accepted values, no unknown keys), then against the metric
names the TAI report provides, finite numbers and the direction of each comparison.
Each error names the gate, the key, the bad value and what is accepted.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tai.significance import PairedDifference

SUPPORTED_VERSIONS = (1,)
DEFAULT_CONFIDENCE = 0.95
DEFAULT_APPROVAL_TIMEOUT_S = 86400
USES = ("point", "lower", "upper")
NO_CHAMPION = "no champion yet: judged on absolute gates only"

_SECTIONS = {"gates": "gate", "champion": "champion gate"}
_ITEM_SHAPES = {
    "gates": "a mapping with `metric` and `min` or `max`",
    "champion": "a mapping with `metric` and `margin` or `require: superior`",
}


class PolicyError(ValueError):
    """The policy file is malformed or names something the TAI report does not have."""


@dataclass(frozen=True)
class Gate:
    """An absolute gate: ``metric`` (its point value or a bound) against a threshold."""

    metric: str
    bound: str  # "min" or "max"
    threshold: float
    why: str = ""
    use: str = "point"  # "point", "lower" or "upper"

    @property
    def op(self) -> str:
        return ">=" if self.bound == "min" else "<="

    def passes(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.threshold if self.bound == "min" else value <= self.threshold


@dataclass(frozen=True)
class ChampionGate:
    """A comparison gate: the paired difference ``challenger - champion`` of ``metric``."""

    metric: str
    better: str  # "higher" or "lower"
    require: str  # "non-inferior" or "superior"
    margin: float = 0.0
    why: str = ""

    @property
    def use(self) -> str:
        """The bound of the difference that is judged: the pessimistic one."""
        return "lower" if self.better == "higher" else "upper"

    @property
    def op(self) -> str:
        strict = self.require == "superior"
        if self.better == "higher":
            return ">" if strict else ">="
        return "<" if strict else "<="

    @property
    def threshold(self) -> float:
        if self.require == "superior":
            return 0.0
        return -self.margin if self.better == "higher" else self.margin

    def passes(self, bound: float) -> bool:
        if math.isnan(bound):
            return False
        return {
            ">": bound > self.threshold,
            ">=": bound >= self.threshold,
            "<": bound < self.threshold,
            "<=": bound <= self.threshold,
        }[self.op]


@dataclass(frozen=True)
class Approval:
    """Whether a person must approve a version that passed every gate, and how long the
    pipeline waits for the decision before it rejects the version."""

    required: bool = False
    timeout_s: int = DEFAULT_APPROVAL_TIMEOUT_S


@dataclass(frozen=True)
class GatePolicy:
    """A parsed policy: absolute ``gates``, ``champion`` comparisons and their ``confidence``."""

    version: int
    gates: tuple[Gate, ...]
    sha256: str
    source: str = ""
    confidence: float = DEFAULT_CONFIDENCE
    champion: tuple[ChampionGate, ...] = ()
    approval: Approval = field(default_factory=lambda: Approval())

    def bound_metrics(self) -> tuple[str, ...]:
        """Metrics whose confidence bounds the evaluation must supply (``bounds=``)."""
        return tuple(sorted({g.metric for g in self.gates if g.use != "point"}))

    def comparison_metrics(self) -> tuple[str, ...]:
        """Metrics whose paired difference with the champion must be supplied."""
        return tuple(g.metric for g in self.champion)


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate.

    ``value`` is the number judged against ``op threshold``: the metric's point value, a
    bound of its interval (``use``), or, for a comparison with the champion
    (``compare="champion"``), a bound of the difference ``challenger - champion``. ``point``
    is then the point estimate (of the metric, or of the difference) and ``lower`` and
    ``upper`` the interval at level ``confidence``. ``note`` says why a gate failed without
    being judged (a bound or comparison the evaluation did not supply).
    """

    metric: str
    op: str
    threshold: float
    value: float
    passed: bool
    skipped_because: str = ""
    use: str = "point"
    point: float = math.nan
    confidence: float = math.nan
    lower: float = math.nan
    upper: float = math.nan
    compare: str = ""
    requirement: str = ""
    margin: float = math.nan
    p_value: float = math.nan
    test: str = ""
    champion_value: float = math.nan
    challenger_value: float = math.nan
    note: str = ""

    @property
    def label(self) -> str:
        """What the gate judges, e.g. ``ece upper 95% bound`` or ``accuracy vs champion``."""
        if self.compare:
            return f"{self.metric} vs {self.compare}"
        if self.use != "point":
            return f"{self.metric} {self.use} {_percent(self.confidence)} bound"
        return self.metric

    @property
    def key(self) -> str:
        """A short identifier, unique per metric and kind of gate (for tags)."""
        if self.compare:
            return f"{self.compare}.{self.metric}"
        return self.metric if self.use == "point" else f"{self.metric}.{self.use}"

    def explain(self) -> str:
        if self.skipped_because:
            return f"skipped: {self.label} ({self.skipped_because})"
        verdict = "pass" if self.passed else "FAIL"
        required = f"required {self.op} {self.threshold:g}"
        if self.compare:
            return f"{verdict}: {self._explain_comparison(required)}"
        point = f" (point {self.point:.4f})" if self.use != "point" else ""
        if self.note:
            return f"{verdict}: {self.label} {self.note}{point} ({required})"
        return f"{verdict}: {self.label} = {self.value:.4f}{point} ({required})"

    def _explain_comparison(self, required: str) -> str:
        if self.requirement == "superior":
            required += ": significantly better"
        else:
            required += f": non-inferior within margin {self.margin:g}"
        if self.note:
            return f"{self.label}: {self.note} ({required})"
        p = f"; {self.test} p = {self.p_value:.3g}" if math.isfinite(self.p_value) else ""
        return (
            f"{self.label}: difference {self.point:+.4f} (challenger "
            f"{self.challenger_value:.4f}, champion {self.champion_value:.4f}), "
            f"{_percent(self.confidence)} interval [{self.lower:+.4f}, {self.upper:+.4f}], "
            f"{self.use} bound {self.value:+.4f} ({required}){p}"
        )


@dataclass(frozen=True)
class GateDecision:
    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def reasons(self) -> list[str]:
        """One line per failed gate; empty when every gate passed."""
        return [r.explain() for r in self.results if not r.passed]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "gates": [asdict(r) for r in self.results]}

    def markdown_table(self) -> str:
        rows = ["| gate | value | required | outcome |", "|---|---|---|---|"]
        rows += [
            f"| {r.label} | {r.value:.4f} | {r.op} {r.threshold:g} | {_outcome(r)} |"
            for r in self.results
        ]
        return "\n".join(rows)


def _outcome(result: GateResult) -> str:
    if result.skipped_because:
        return f"skipped ({result.skipped_because})"
    return "pass" if result.passed else "**FAIL**"


def _percent(confidence: float) -> str:
    return f"{100 * confidence:.4g}%"


# --------------------------------------------------------------------------- parsing


def parse_policy(
    text: str, known_metrics: Iterable[str], *, source: str = "<policy>"
) -> GatePolicy:
    """Parse and validate a policy document.

    Raises:
        PolicyError: the YAML is malformed; the document does not follow
            ``tai/policy_schema.json`` (unsupported version, unknown keys, a gate with no
            or two bounds, a value of the wrong type or not accepted); a gate names an
            unknown metric; a number is not finite; a comparison's direction is unknown.
    """
    known = set(known_metrics)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML ({exc}); fix the file's syntax") from None
    _validate_schema(doc, source)
    confidence = doc.get("confidence", DEFAULT_CONFIDENCE)
    if not math.isfinite(confidence):
        raise PolicyError(
            f"{source}: `confidence: {confidence!r}` must be a number in the open interval "
            "(0.5, 1), e.g. `confidence: 0.95`"
        )
    gates = tuple(_parse_gate(i, g, known, source) for i, g in enumerate(doc["gates"], start=1))
    champion = _parse_champion(doc.get("champion", []), gates, known, source)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return GatePolicy(
        version=doc.get("version", 1),
        gates=gates,
        sha256=digest,
        source=source,
        confidence=float(confidence),
        champion=champion,
        approval=Approval(**doc.get("approval", {})),
    )


def _check_metric(metric: str, known: set[str], where: str) -> None:
    if metric not in known:
        raise PolicyError(
            f"{where}: unknown metric {metric!r}; the TAI report provides: "
            f"{', '.join(sorted(known))}"
        )


def _parse_gate(number: int, raw: dict, known: set[str], source: str) -> Gate:
    metric = raw["metric"]
    where = f"{source}: gate {number}"
    _check_metric(metric, known, where)
    bound = "min" if "min" in raw else "max"
    threshold = raw[bound]
    if not math.isfinite(threshold):
        raise PolicyError(
            f"{where} ({metric}): threshold `{bound}: {threshold!r}` is not a finite number; "
            f"write e.g. `{bound}: 0.95`"
        )
    return Gate(
        metric=metric,
        bound=bound,
        threshold=float(threshold),
        why=raw.get("why", ""),
        use=raw.get("use", "point"),
    )


def _parse_champion(
    raw_gates: list[dict], gates: tuple[Gate, ...], known: set[str], source: str
) -> tuple[ChampionGate, ...]:
    parsed: list[ChampionGate] = []
    for number, raw in enumerate(raw_gates, start=1):
        metric = raw["metric"]
        where = f"{source}: champion gate {number}"
        _check_metric(metric, known, where)
        where = f"{where} ({metric})"
        if metric in {c.metric for c in parsed}:
            raise PolicyError(
                f"{where}: {metric!r} is compared with the champion twice; keep one "
                "comparison per metric"
            )
        require, margin = _requirement(raw, where)
        parsed.append(
            ChampionGate(
                metric=metric,
                better=_direction(raw, gates, where),
                require=require,
                margin=margin,
                why=raw.get("why", ""),
            )
        )
    return tuple(parsed)


def _requirement(raw: dict, where: str) -> tuple[str, float]:
    require = raw.get("require", "non-inferior" if "margin" in raw else None)
    if require is None:
        raise PolicyError(
            f"{where}: say what the comparison requires: `margin: 0.01` (non-inferior: not "
            "worse than the champion by more than the margin) or `require: superior`"
        )
    if require == "superior":
        if "margin" in raw:
            raise PolicyError(
                f"{where}: `require: superior` takes no `margin` (got `margin: "
                f"{raw['margin']!r}`); drop the margin, or use `require: non-inferior`"
            )
        return require, 0.0
    margin = raw.get("margin")
    if margin is None:
        raise PolicyError(
            f"{where}: `require: non-inferior` needs `margin: <number >= 0>`, how much worse "
            "than the champion the challenger may be, e.g. `margin: 0.01`"
        )
    if not math.isfinite(margin):
        raise PolicyError(
            f"{where}: `margin: {margin!r}` is not a finite number; write e.g. `margin: 0.01`"
        )
    return require, float(margin)


def _direction(raw: dict, gates: tuple[Gate, ...], where: str) -> str:
    metric = raw["metric"]
    implied = {
        ("higher" if g.bound == "min" else "lower", number)
        for number, g in enumerate(gates, start=1)
        if g.metric == metric
    }
    directions = {d for d, _ in implied}
    better = raw.get("better")
    if better is not None:
        clash = sorted(n for d, n in implied if d != better)
        if clash:
            bound = "max" if better == "higher" else "min"
            raise PolicyError(
                f"{where}: `better: {better}` contradicts gate {clash[0]}, whose `{bound}` "
                f"on {metric} says {'lower' if better == 'higher' else 'higher'} is better; "
                "fix one of them"
            )
        return better
    if len(directions) == 1:
        return directions.pop()
    detail = (
        f"the gates on {metric} have both `min` and `max`"
        if directions
        else f"no gate gives {metric} a `min` or `max`"
    )
    raise PolicyError(
        f"{where}: cannot tell whether a higher or a lower {metric} is better ({detail}); "
        "add `better: higher` or `better: lower`"
    )


def load_policy(path: Path, known_metrics: Iterable[str]) -> GatePolicy:
    """Read and validate a policy file (see :func:`parse_policy`)."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file {path} does not exist; create it or set TAI_POLICY_FILE")
    return parse_policy(path.read_text(), known_metrics, source=str(path))


# --------------------------------------------------------------------------- schema


@cache
def policy_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document (``tai/policy_schema.json``)."""
    return json.loads(resources.files("tai").joinpath("policy_schema.json").read_text())


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(policy_schema())


# Order of the schema errors of one item: the most basic first (a key-level error ranks 5).
_PRIORITY = {"type": 0, "additionalProperties": 1, "required": 2, "oneOf": 9}
_TOP_ORDER = {
    key: i for i, key in enumerate(("version", "confidence", "gates", "champion", "approval"))
}


def _validate_schema(doc: object, source: str) -> None:
    errors = sorted(_validator().iter_errors(doc), key=_document_order)
    if errors:
        messages = [_schema_message(e, doc, source) for e in errors]
        raise PolicyError("\n".join(dict.fromkeys(messages)))


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
        kind_of = "gates" if top == "gates" else "comparison gates"
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


# --------------------------------------------------------------------------- evaluation


def evaluate_gates(
    policy: GatePolicy,
    metrics: Mapping[str, float],
    *,
    not_applicable: Mapping[str, str] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    comparisons: Mapping[str, PairedDifference] | None = None,
) -> GateDecision:
    """Judge ``metrics`` against every gate; a missing metric fails its gate as NaN.

    Args:
        policy: the gates.
        metrics: metric name -> value.
        not_applicable: metric name -> reason, for absolute gates that cannot apply to
            this model (a metric defined against the champion when there is none yet);
            they pass as skipped.
        bounds: metric name -> ``(lower, upper)`` of its confidence interval at level
            ``policy.confidence``, for the gates with ``use: lower | upper``. A gate whose
            bound is missing fails with an explanation.
        comparisons: metric name -> paired difference ``challenger - champion`` at level
            ``policy.confidence``, for the ``champion`` gates. ``None`` means there is no
            champion: those gates are skipped. A missing comparison, or one at another
            level, fails its gate with an explanation.

    Raises:
        ValueError: a bound is not a ``(lower, upper)`` pair with ``lower <= upper``.
    """
    skip = not_applicable or {}
    supplied = _checked_bounds(bounds or {})
    results = [_judge_gate(g, metrics, skip, supplied, policy.confidence) for g in policy.gates]
    results += [_judge_comparison(g, comparisons, policy.confidence) for g in policy.champion]
    return GateDecision(tuple(results))


def _checked_bounds(bounds: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    checked = {}
    for metric, pair in bounds.items():
        try:
            lower, upper = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(
                f"bounds[{metric!r}] must be a (lower, upper) pair of numbers, got {pair!r}"
            ) from None
        if lower > upper:
            raise ValueError(
                f"bounds[{metric!r}] = ({lower}, {upper}) has lower > upper; pass (lower, upper)"
            )
        checked[metric] = (lower, upper)
    return checked


def _judge_gate(
    gate: Gate,
    metrics: Mapping[str, float],
    skip: Mapping[str, str],
    bounds: Mapping[str, tuple[float, float]],
    confidence: float,
) -> GateResult:
    point = float(metrics.get(gate.metric, math.nan))
    reason = skip.get(gate.metric, "")
    if gate.use == "point":
        passed = bool(reason) or gate.passes(point)
        return GateResult(gate.metric, gate.op, gate.threshold, point, passed, reason)
    common = {"use": gate.use, "point": point, "confidence": confidence}
    if reason:
        return GateResult(gate.metric, gate.op, gate.threshold, math.nan, True, reason, **common)
    if gate.metric not in bounds:
        return GateResult(
            gate.metric,
            gate.op,
            gate.threshold,
            math.nan,
            False,
            note="was not supplied by the evaluation",
            **common,
        )
    lower, upper = bounds[gate.metric]
    value = lower if gate.use == "lower" else upper
    return GateResult(
        gate.metric,
        gate.op,
        gate.threshold,
        value,
        gate.passes(value),
        lower=lower,
        upper=upper,
        **common,
    )


def _judge_comparison(
    gate: ChampionGate,
    comparisons: Mapping[str, PairedDifference] | None,
    confidence: float,
) -> GateResult:
    common = {
        "use": gate.use,
        "confidence": confidence,
        "compare": "champion",
        "requirement": gate.require,
        "margin": gate.margin,
    }
    head = (gate.metric, gate.op, gate.threshold)
    if comparisons is None:
        return GateResult(*head, math.nan, True, NO_CHAMPION, **common)
    comparison = comparisons.get(gate.metric)
    if comparison is None:
        note = "no paired comparison with the champion was supplied"
        return GateResult(*head, math.nan, False, note=note, **common)
    if not math.isclose(comparison.confidence, confidence):
        note = (
            f"the paired interval was computed at {_percent(comparison.confidence)}, but the "
            f"policy asks {_percent(confidence)}"
        )
        return GateResult(*head, math.nan, False, note=note, **common)
    value = comparison.lower if gate.use == "lower" else comparison.upper
    return GateResult(
        *head,
        value,
        gate.passes(value),
        point=comparison.diff,
        lower=comparison.lower,
        upper=comparison.upper,
        p_value=comparison.p_value,
        test=comparison.test,
        champion_value=comparison.value_a,
        challenger_value=comparison.value_b,
        **common,
    )
