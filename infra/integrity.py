"""Integrity of model weights: a sha256 recorded apart from the file, checked before loading.

The weights of a registered model live in the artifact store (a folder, S3, ...). Whoever can
write there could swap ``state_dict.pt`` for other weights. So the SHA-256 digest (FIPS 180-4)
of the file's exact bytes is computed when the weights are logged and recorded where the
artifact store cannot change it: as an immutable MLflow run param and a run tag, and as a tag
of the registered model version (:data:`WEIGHTS_SHA256_TAG`). Loading hashes the bytes that
are about to be deserialised, compares them with every recorded digest and only then calls
``torch.load(..., weights_only=True)`` on those same bytes (no window between check and use),
so no pickle is ever executed and no substituted tensor is ever used.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tai import tags

__all__ = [
    "WEIGHTS_FILE",
    "WEIGHTS_SHA256_TAG",
    "IntegrityError",
    "RegistryError",
    "MODEL_SHA256_TAG",
    "load_verified_state_dict",
    "manifest_sha256",
    "sha256_hex",
    "verify_sha256",
    "weights_sha256_tag",
]

WEIGHTS_SHA256_TAG = tags.WEIGHTS_SHA256
"""Key of the digest as MLflow run param, run tag and model-version tag."""

MODEL_SHA256_TAG = tags.MODEL_SHA256
"""Key of the digest of every file of the logged (servable) model, as model-version tag."""

WEIGHTS_FILE = "state_dict.pt"

# MLflow writes this file into a registered model it downloads (name and version); it is
# not part of the logged model.
_NOT_IN_MANIFEST = frozenset({"registered_model_meta"})

_ADVICE = (
    "Do not load these weights: re-register the model from a trusted training run "
    "(or retrain), and find out who could write to the artifact store."
)


class RegistryError(RuntimeError):
    """A registry operation failed; the message names the model and version.

    Defined here, not in :mod:`infra.mlflow_store` (which re-exports it), so that the
    served pyfunc shares it without importing the store.
    """


class IntegrityError(RegistryError):
    """A weights or model file does not match its recorded SHA-256 digest, or none is recorded."""


def sha256_hex(data: bytes) -> str:
    """The SHA-256 digest of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def weights_sha256_tag(sha256: str) -> dict[str, str]:
    """The model-version tag that records the weights' digest, e.g. for ``register(tags=...)``.

    Raises:
        ValueError: if ``sha256`` is not 64 hex digits.
    """
    return {WEIGHTS_SHA256_TAG: _normalised(sha256, "sha256")}


def verify_sha256(data: bytes, expected: Sequence[str | None], *, source: str) -> str:
    """Check that ``data`` hashes to every recorded digest in ``expected``; return the digest.

    ``None`` entries (a record that does not exist) are skipped, but at least one digest
    must be recorded: unrecorded weights are refused, not trusted.

    Args:
        data: the exact bytes that will be deserialised.
        expected: the recorded digests (e.g. the run's, the model version's).
        source: what the bytes are, for the error message (run id and file).

    Raises:
        IntegrityError: no digest is recorded, a recorded one is not 64 hex digits, or the
            bytes do not match one of them.
    """
    try:
        recorded = [_normalised(d, "the recorded sha256") for d in expected if d is not None]
    except ValueError as err:
        raise IntegrityError(f"{source}: {err} Refusing to load it. {_ADVICE}") from None
    if not recorded:
        raise IntegrityError(
            f"no sha256 is recorded for {source} (expected the run param or tag "
            f"`{WEIGHTS_SHA256_TAG}`, or a digest passed in), so its integrity cannot be "
            f"checked; refusing to load it. {_ADVICE}"
        )
    actual = sha256_hex(data)
    for digest in recorded:
        if not hmac.compare_digest(actual, digest):
            raise IntegrityError(
                f"{source} has been modified: its sha256 is {actual}, but {digest} was "
                f"recorded when it was logged; refusing to load it. {_ADVICE}"
            )
    return actual


def manifest_sha256(folder: Path) -> str:
    """One digest of every file under ``folder``: names and contents.

    The digest of the text ``"<sha256>  <relative path>\\n"`` per file, sorted by path (the
    format of ``sha256sum``), so a changed, added, removed or renamed file changes it.
    MLflow's ``registered_model_meta`` at the top is left out.

    Raises:
        FileNotFoundError: if ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"cannot digest {root}: not a directory")
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative not in _NOT_IN_MANIFEST:
            lines.append(f"{sha256_hex(path.read_bytes())}  {relative}\n")
    return sha256_hex("".join(lines).encode())


def load_verified_state_dict(
    path: Path, expected: Sequence[str | None], *, source: str
) -> dict[str, Any]:
    """Read a state dict file, verify its digest, then load it with ``weights_only=True``.

    The bytes are read once; the verified bytes are the ones loaded.

    Raises:
        IntegrityError: see :func:`verify_sha256`; or the file is a pickle of Python
            objects (code that loading would run), not plain weights.
        FileNotFoundError: if ``path`` does not exist.
    """
    import torch

    data = Path(path).read_bytes()
    verify_sha256(data, expected, source=source)
    try:
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:  # torch's "Weights only load failed ..."
        # Name what the pickle would have called, not torch's advice to load it anyway.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = found.group(1) if found else "not tensors"
        raise IntegrityError(
            f"{source} is not plain weights: it holds Python objects that loading would run "
            f"({what}); refusing to load it. Re-register the model from a trusted run."
        ) from None
    if not isinstance(state, Mapping):
        raise IntegrityError(
            f"{source} holds a {type(state).__name__}, not a state dict; refusing to use it."
        )
    return dict(state)


def _normalised(digest: str, what: str) -> str:
    text = str(digest).strip().lower()
    if len(text) != 64 or any(c not in string.hexdigits for c in text):
        raise ValueError(
            f"Expected {what} to be 64 hex digits (a SHA-256 digest), but got {digest!r}. "
            "Pass the value returned by MlflowStore.log_weights."
        )
    return text
