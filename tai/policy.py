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
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

SUPPORTED_VERSIONS = (1,)


class PolicyError(ValueError):
    """The policy file is malformed or names something the TAI report does not have."""


@dataclass(frozen=True)
class Gate:
    metric: str
    bound: str  # "min" or "max"
    threshold: float
    why: str = ""

    @property
    def op(self) -> str:
        return ">=" if self.bound == "min" else "<="

    def passes(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.threshold if self.bound == "min" else value <= self.threshold


@dataclass(frozen=True)
class GatePolicy:
    version: int
    gates: tuple[Gate, ...]
    sha256: str
    source: str = ""


@dataclass(frozen=True)
class GateResult:
    metric: str
    op: str
    threshold: float
    value: float
    passed: bool
    skipped_because: str = ""

    def explain(self) -> str:
        if self.skipped_because:
            return f"skipped: {self.metric} ({self.skipped_because})"
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{verdict}: {self.metric} = {self.value:.4f} (required {self.op} {self.threshold:g})"
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
            f"| {r.metric} | {r.value:.4f} | {r.op} {r.threshold:g} | {_outcome(r)} |"
            for r in self.results
        ]
        return "\n".join(rows)


def _outcome(result: GateResult) -> str:
    if result.skipped_because:
        return f"skipped ({result.skipped_because})"
    return "pass" if result.passed else "**FAIL**"


def parse_policy(
    text: str, known_metrics: Iterable[str], *, source: str = "<policy>"
) -> GatePolicy:
    """Parse and validate a policy document.

    Raises:
        PolicyError: the YAML is malformed, the version is unsupported, a gate names an
            unknown metric, has no or two bounds, or a threshold that is not a number.
    """
    known = set(known_metrics)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML ({exc}); fix the file's syntax") from None
    if not isinstance(doc, dict) or "gates" not in doc:
        raise PolicyError(f"{source}: expected a mapping with `version` and a list `gates`")
    version = doc.get("version", 1)
    if version not in SUPPORTED_VERSIONS:
        raise PolicyError(f"{source}: policy version {version!r} is not supported; use 1")
    raw_gates = doc["gates"]
    if not isinstance(raw_gates, list) or not raw_gates:
        raise PolicyError(f"{source}: `gates` must be a non-empty list of gates")
    gates = tuple(_parse_gate(i, g, known, source) for i, g in enumerate(raw_gates, start=1))
    digest = hashlib.sha256(text.encode()).hexdigest()
    return GatePolicy(version=version, gates=gates, sha256=digest, source=source)


def _parse_gate(number: int, raw: object, known: set[str], source: str) -> Gate:
    where = f"{source}: gate {number}"
    if not isinstance(raw, dict) or "metric" not in raw:
        raise PolicyError(f"{where}: expected a mapping with `metric` and `min` or `max`")
    metric = raw["metric"]
    if metric not in known:
        raise PolicyError(
            f"{where}: unknown metric {metric!r}; the TAI report provides: "
            f"{', '.join(sorted(known))}"
        )
    unexpected = set(raw) - {"metric", "min", "max", "why"}
    if unexpected:
        raise PolicyError(
            f"{where}: unexpected keys {sorted(unexpected)}; allowed: metric, min, max, why"
        )
    bounds = [b for b in ("min", "max") if b in raw]
    if len(bounds) != 1:
        raise PolicyError(f"{where} ({metric}): give exactly one of `min` or `max`")
    bound = bounds[0]
    threshold = raw[bound]
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
    ):
        raise PolicyError(
            f"{where} ({metric}): threshold `{bound}: {threshold!r}` is not a finite number; "
            f"write e.g. `{bound}: 0.95`"
        )
    return Gate(metric=metric, bound=bound, threshold=float(threshold), why=str(raw.get("why", "")))


def load_policy(path: Path, known_metrics: Iterable[str]) -> GatePolicy:
    """Read and validate a policy file (see :func:`parse_policy`)."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file {path} does not exist; create it or set TAI_POLICY_FILE")
    return parse_policy(path.read_text(), known_metrics, source=str(path))


def evaluate_gates(
    policy: GatePolicy,
    metrics: Mapping[str, float],
    *,
    not_applicable: Mapping[str, str] | None = None,
) -> GateDecision:
    """Judge ``metrics`` against every gate; a missing metric fails its gate as NaN.

    Args:
        policy: the gates.
        metrics: metric name -> value.
        not_applicable: metric name -> reason, for gates that cannot apply to this model
            (a comparison with the champion when there is none yet); they pass as skipped.
    """
    skip = not_applicable or {}
    results = []
    for g in policy.gates:
        value = float(metrics.get(g.metric, float("nan")))
        reason = skip.get(g.metric, "")
        results.append(
            GateResult(g.metric, g.op, g.threshold, value, bool(reason) or g.passes(value), reason)
        )
    return GateDecision(tuple(results))
