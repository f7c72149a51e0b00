"""The production stack on one machine, for integration and fault tests and benchmarks.

PostgreSQL, an MLflow tracking server and a Prefect server on it, a process work pool with
a worker running the deployments of ``prefect.yaml``, and ``tai webhook``; all on
127.0.0.1, started and stopped by :class:`Stack` (``python -m infra.stack up|down|status|run``).
"""

from infra.stack.processes import StackError
from infra.stack.stack import SERVICES, Stack

__all__ = ["SERVICES", "Stack", "StackError"]
