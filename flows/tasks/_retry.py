"""Retry only what can succeed on a second try: the outside system being briefly away."""

from __future__ import annotations

from typing import Any

TRANSIENT = (ConnectionError, TimeoutError)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry connection errors and time-outs only.

    A missing branch or a corrupt image fails the same way every time; retrying it only
    delays the error the user needs to see.
    """
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception:
        return False
    return False
