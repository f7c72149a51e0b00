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
:mod:`tai.gates.significance`), by a bound of its confidence interval::

    champion:
      - metric: accuracy
        margin: 0.005         # non-inferiority: lower bound of the difference >= -0.005
        why: a retrain must not lose accuracy, beyond noise and half a point
      - metric: ece
        require: superior     # upper bound of the difference < 0: significantly better

- ``require: non-inferior`` (the default when ``margin`` is given) with ``margin: m >= 0``:
  the challenger may be worse than the champion by at most ``m``. For a higher-is-better
  metric the lower bound of the difference must be ``>= -m``; for a lower-is-better one
  the upper bound must be ``<= m``.
- ``require: superior`` (no margin): the challenger must be significantly better: the
  lower bound ``> 0`` (higher is better) or the upper bound ``< 0`` (lower is better).
- Which way is better is the metric's declared direction (:mod:`tai.evaluation.registry`);
  ``better: higher | lower`` may repeat it, and must be given for a metric that declares
  none (e.g. ``temperature``).

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

Validation: the document is checked against ``tai/gates/policy_schema.json`` (JSON Schema
2020-12: structure, types, accepted values, no unknown keys), then against the metrics
the checks declare (names, which have confidence bounds, which can be compared with the
champion, their directions) and for finite numbers.
Each error names the gate, the key, the bad value and what is accepted.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tai.check import MetricSpec
from tai.gates.schema import schema_errors

SUPPORTED_VERSIONS = (1,)


DEFAULT_CONFIDENCE = 0.95


DEFAULT_APPROVAL_TIMEOUT_S = 86400


USES = ("point", "lower", "upper")


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
    monitoring: tuple[Gate, ...] = ()

    def bound_metrics(self) -> tuple[str, ...]:
        """Metrics whose confidence bounds the evaluation must supply (``bounds=``)."""
        return tuple(sorted({g.metric for g in self.gates if g.use != "point"}))

    def comparison_metrics(self) -> tuple[str, ...]:
        """Metrics whose paired difference with the champion must be supplied."""
        return tuple(g.metric for g in self.champion)


def parse_policy(
    text: str,
    specs: Mapping[str, MetricSpec],
    *,
    monitoring_specs: Mapping[str, MetricSpec] | None = None,
    source: str = "<policy>",
) -> GatePolicy:
    """Parse and validate a policy document.

    Raises:
        PolicyError: the YAML is malformed; the document does not follow
            ``tai/gates/policy_schema.json`` (unsupported version, unknown keys, a gate with no
            or two bounds, a value of the wrong type or not accepted); a gate names an
            unknown metric, a bound the evaluation does not compute or a comparison it
            cannot make; a number is not finite; a comparison's direction contradicts the
            metric's, or is missing for a metric without one.

    ``specs`` are the metrics the checks declare (:func:`tai.evaluation.registry.metric_specs`):
    the valid names, each one's direction, whether it has a confidence interval and whether
    it can be compared with the champion. ``monitoring_specs`` are those the rules of the
    ``monitoring:`` section may name (the monitoring stage's metrics); without them the
    section is refused.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # One line: the parser's message spans several (the offending line and a caret).
        problem = " ".join(str(exc).split())
        raise PolicyError(f"{source}: not valid YAML ({problem}); fix the file's syntax") from None
    errors = schema_errors(doc, source)
    if errors:
        raise PolicyError("\n".join(errors))
    confidence = doc.get("confidence", DEFAULT_CONFIDENCE)
    if not math.isfinite(confidence):
        raise PolicyError(
            f"{source}: `confidence: {confidence!r}` must be a number in the open interval "
            "(0.5, 1), e.g. `confidence: 0.95`"
        )
    gates = tuple(_parse_gate(i, g, specs, source) for i, g in enumerate(doc["gates"], start=1))
    champion = _parse_champion(doc.get("champion", []), specs, source)
    rules = doc.get("monitoring", [])
    if rules and monitoring_specs is None:
        raise PolicyError(f"{source}: a `monitoring:` section is not read here")
    monitoring = tuple(
        _parse_gate(i, g, monitoring_specs or {}, source, kind="monitoring rule")
        for i, g in enumerate(rules, start=1)
    )
    digest = hashlib.sha256(text.encode()).hexdigest()
    return GatePolicy(
        version=doc.get("version", 1),
        gates=gates,
        sha256=digest,
        source=source,
        confidence=float(confidence),
        champion=champion,
        approval=Approval(**doc.get("approval", {})),
        monitoring=monitoring,
    )


def _check_metric(metric: str, specs: Mapping[str, MetricSpec], where: str) -> MetricSpec:
    if metric not in specs:
        close = difflib.get_close_matches(metric, list(specs), n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise PolicyError(
            f"{where}: unknown metric {metric!r}; {hint}`tai metrics` lists the "
            f"{len(specs)} metrics the checks report"
        )
    return specs[metric]


def _parse_gate(
    number: int,
    raw: dict,
    specs: Mapping[str, MetricSpec],
    source: str,
    *,
    kind: str = "gate",
) -> Gate:
    metric = raw["metric"]
    where = f"{source}: {kind} {number}"
    spec = _check_metric(metric, specs, where)
    use = raw.get("use", "point")
    if use != "point" and not spec.bounded:
        bounded = ", ".join(n for n, s in specs.items() if s.bounded)
        raise PolicyError(
            f"{where} ({metric}): no confidence bound is computed for {metric!r}; "
            f"`use: lower|upper` works with {bounded} (or judge the point value: `use: point`)"
        )
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
        use=use,
    )


def _parse_champion(
    raw_gates: list[dict], specs: Mapping[str, MetricSpec], source: str
) -> tuple[ChampionGate, ...]:
    parsed: list[ChampionGate] = []
    for number, raw in enumerate(raw_gates, start=1):
        metric = raw["metric"]
        where = f"{source}: champion gate {number}"
        spec = _check_metric(metric, specs, where)
        where = f"{where} ({metric})"
        if not spec.comparable:
            comparable = ", ".join(n for n, s in specs.items() if s.comparable)
            raise PolicyError(
                f"{where}: the champion section cannot compare {metric!r}; paired "
                f"comparisons exist for {comparable}"
            )
        if metric in {c.metric for c in parsed}:
            raise PolicyError(
                f"{where}: {metric!r} is compared with the champion twice; keep one "
                "comparison per metric"
            )
        require, margin = _requirement(raw, where)
        parsed.append(
            ChampionGate(
                metric=metric,
                better=_direction(raw, spec, where),
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


def _direction(raw: dict, spec: MetricSpec, where: str) -> str:
    """Which way is better: the metric's declared direction, or ``better:`` for a metric
    that declares none."""
    better = raw.get("better")
    if spec.direction and better is not None and better != spec.direction:
        raise PolicyError(
            f"{where}: `better: {better}` contradicts the metric: a {spec.direction} "
            f"{spec.name} is better; drop `better:` or fix it"
        )
    if spec.direction:
        return spec.direction
    if better is None:
        raise PolicyError(
            f"{where}: {spec.name} ({spec.description}) has no better side; say which you "
            "want with `better: higher` or `better: lower`"
        )
    return better


def load_policy(
    path: Path,
    specs: Mapping[str, MetricSpec],
    *,
    monitoring_specs: Mapping[str, MetricSpec] | None = None,
) -> GatePolicy:
    """Read and validate a policy file (see :func:`parse_policy`)."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file {path} does not exist; create it or set TAI_POLICY_FILE")
    return parse_policy(
        path.read_text(), specs, monitoring_specs=monitoring_specs, source=str(path)
    )
