"""Lineage: the code version and the tags every run and model version carries."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from infra.datastore.base import DataVersion
from tai import tags
from tai.gates.policy import GatePolicy
from tai.gates.requirements import Requirements

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def code_version(root: Path = PROJECT_ROOT) -> str:
    """The code that runs: ``TAI_CODE_VERSION`` when set (container images without .git);
    else the git sha, with ``-dirty-<digest of the uncommitted changes>`` when tracked
    files differ from it (so two different edits never look like the same code); else
    ``unknown`` (no git, not a checkout)."""
    import hashlib
    import os

    if os.environ.get("TAI_CODE_VERSION"):
        return os.environ["TAI_CODE_VERSION"]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout

    try:
        sha = git("rev-parse", "HEAD").strip()
        diff = git("diff", "HEAD", "--no-ext-diff", "--binary")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not diff:
        return sha
    return f"{sha}-dirty-{hashlib.sha256(diff.encode()).hexdigest()[:12]}"


# The settings that shape a model: the same data, code, policy and these give the same
# version (`tai run` reuses it). Infrastructure (stores, servers, hardware) is left out.
MODEL_SETTINGS = (
    "dataset",
    "model",
    "max_epochs",
    "batch_size",
    "learning_rate",
    "seed",
    "max_images_per_split",
    "image_size",
    "augment",
    "pretrained",
    "freeze_backbone",
    "unfreeze_after_epochs",
    "tai_budget",
    "corruptions",
    "corruption_plugins",
    "adversarial_epsilons",
    "pgd_steps",
    "certify",
    "certify_sigma",
    "certify_n0",
    "certify_n",
    "certify_budget",
    "target_coverage",
    "group_column",
    "factor_method",
)


def settings_digest(settings) -> str:
    """sha256 of the model-shaping settings (:data:`MODEL_SETTINGS`), as canonical JSON."""
    import hashlib
    import json

    from tai.modeling.pretrained import is_state_dict_path, sha256_file

    values = {k: getattr(settings, k) for k in MODEL_SETTINGS}
    if settings.pretrained and is_state_dict_path(settings.pretrained):
        # A file's content, not its name: new weights at the same path are another model.
        # (Torchvision's cached files carry their hash in their name and are checked.)
        path = Path(settings.pretrained).expanduser()
        if path.is_file():
            values["pretrained"] = f"{settings.pretrained}@{sha256_file(path)}"
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def model_tags(model) -> dict[str, str]:
    """The architecture a version was built by and the pretrained weights (name and the
    sha256 of the file read) it started from, as tags."""
    out = {tags.MODEL_ARCHITECTURE: str(model.factory or model.name)}
    if model.pretrained:
        out[tags.PRETRAINED] = str(model.pretrained)
        out[tags.PRETRAINED_SHA256] = str(model.pretrained_sha256)
    return out


def lineage_tags(
    data: DataVersion,
    policy: GatePolicy,
    requirements: Requirements | None = None,
    settings=None,
) -> dict[str, str]:
    """Data version, code version, policy, requirements and settings hashes, as tags."""
    return {
        **data.as_tags(),
        **({tags.SETTINGS_SHA256: settings_digest(settings)} if settings is not None else {}),
        tags.CODE_VERSION: code_version(),
        tags.POLICY_SHA256: policy.sha256,
        tags.POLICY_SOURCE: policy.source,
        **({tags.REQUIREMENTS_SHA256: requirements.sha256} if requirements else {}),
    }


IDENTITY = (
    tags.DATA_STORE,
    tags.DATA_REPOSITORY,
    tags.DATA_COMMIT,
    tags.CODE_VERSION,
    tags.POLICY_SHA256,
    tags.SETTINGS_SHA256,
)


def same_inputs(lineage: dict[str, str], version_tags: dict[str, str]) -> bool:
    """Whether a version was trained on exactly these inputs: data commit, code, policy,
    model-shaping settings and requirements (absent on both, or equal)."""
    return all(version_tags.get(k) == lineage.get(k) for k in IDENTITY) and version_tags.get(
        tags.REQUIREMENTS_SHA256
    ) == lineage.get(tags.REQUIREMENTS_SHA256)
