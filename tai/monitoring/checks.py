"""Declarations of the monitoring stage's checks (filled in by the monitoring work)."""

from __future__ import annotations

MONITORING_CHECKS: tuple = ()
