"""One typed settings object for the whole system.

Values come, in rising priority, from the defaults below, an optional YAML settings file
(``TAI_SETTINGS_FILE``, or ``tai.yaml`` in the working directory) and environment
variables with the prefix ``TAI_`` (``TAI_WORKSPACE=/data/tai``, ``TAI_MAX_EPOCHS=3``).

The workspace folder holds every embedded store: the Oxen data repository, MLflow's
SQLite database and artifact folder, Prefect's home, the commit cache and the reports.
Nothing is written outside it: :func:`apply_environment` points Prefect and MLflow there
before either is imported.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class SettingsError(ValueError):
    """A settings value or the settings file is wrong."""


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the optional YAML settings file (lower priority than the environment)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _settings_file()
        if path is None:
            return {}
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(
                f"settings file {path} is not valid YAML: {_yaml_problem(exc)}"
            ) from None
        if not isinstance(data, dict):
            raise SettingsError(f"settings file {path} must hold a mapping of setting: value")
        return {str(k).lower(): v for k, v in data.items()}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint in one line, with where it is (line and column from 1)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _settings_file() -> Path | None:
    explicit = os.environ.get("TAI_SETTINGS_FILE")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SettingsError(
                f"TAI_SETTINGS_FILE points to {path}, which does not exist; "
                "create it or unset TAI_SETTINGS_FILE"
            )
        return path
    default = Path("tai.yaml")
    return default if default.is_file() else None


class Settings(BaseSettings):
    """Every setting of TAI-MLOps; see the README's table for what each one does."""

    model_config = SettingsConfigDict(env_prefix="TAI_", extra="forbid")

    workspace: Path = Path(".tai")

    # data versioning
    data_store: Literal["oxen", "lakefs"] = "oxen"
    data_repository: str = "data"
    data_branch: str = "main"
    dataset: str = "mnist"
    # lakeFS (TAI_DATA_STORE=lakefs); empty values fall back to LAKECTL_* and ~/.lakectl.yaml
    lakefs_endpoint: str = ""
    lakefs_access_key_id: str = ""
    lakefs_secret_access_key: SecretStr = SecretStr("")
    lakefs_storage_namespace: str = ""
    lakefs_max_workers: int = Field(default=8, ge=1)
    # Shared secret of the lakeFS webhook (the same value as the lakeFS server's
    # LAKEFSACTION_TAI_WEBHOOK_SECRET); never logged.
    webhook_secret: SecretStr = SecretStr("")

    # tracking and registry; empty means "the embedded store in the workspace"
    mlflow_tracking_uri: str = ""
    mlflow_artifact_root: str = ""
    experiment_name: str = "tai-mlops"
    registered_model_name: str = "tai-classifier"

    # requirements and gates: the requirements (intended use, risk class, protection needs)
    # set how strict the policy must be; without the file the policy alone decides
    requirements_file: Path = Path("tai-requirements.yaml")
    policy_file: Path = Path("tai-policy.yaml")

    # training
    # small_cnn, resnet18_small, any torchvision classification architecture, a
    # "package.module:factory" or a `tai.models` entry point (checked before a run).
    model: str = "small_cnn"
    # Torchvision weights (DEFAULT, IMAGENET1K_V1, ...) from the local torch cache, or the
    # path of a state dict file; "": none. Nothing is ever downloaded.
    pretrained: str = ""
    # Train only the head; from epoch `unfreeze_after_epochs` (if set) the whole model.
    freeze_backbone: bool = False
    unfreeze_after_epochs: int | None = Field(default=None, ge=0)
    max_epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    seed: int = 0
    # Caps the images read per split (0 = all); tests and quick runs use it.
    max_images_per_split: int = Field(default=0, ge=0)
    # Every image is brought to this size (resize the shorter side, crop the centre);
    # 0: the data's most common size. A mixed folder is converted to one mode (RGB when
    # any image is in colour).
    image_size: int = Field(default=0, ge=0)
    # Training augmentation: "affine" (digits, documents), "crop-flip" (photos), "none".
    augment: Literal["affine", "crop-flip", "none"] = "affine"
    # DataLoader worker processes that decode images (0: the main process).
    num_workers: int = Field(default=0, ge=0)
    # Lightning's hardware settings: several GPUs or nodes are configuration, e.g.
    # TAI_ACCELERATOR=gpu TAI_DEVICES=4 TAI_STRATEGY=ddp TAI_NUM_NODES=2.
    accelerator: str = "auto"
    devices: int = Field(default=1, ge=1)
    num_nodes: int = Field(default=1, ge=1)
    strategy: str = "auto"
    # Sample budget of each TAI check (images per validation pass).
    tai_budget: int = Field(default=512, ge=8)
    # Corruptions of the robustness check (built-in or registered by a plugin); a JSON
    # list in the environment: TAI_CORRUPTIONS='["gaussian_noise", "fog"]'.
    corruptions: list[str] = Field(
        default=["gaussian_noise", "gaussian_blur", "contrast", "jpeg_compression"], min_length=1
    )
    # Your own corruptions, "module:function" or "name=module:function" (also loaded:
    # installed entry points of the group "tai.corruptions"); name them in `corruptions`.
    corruption_plugins: list[str] = Field(default=[])
    # L-infinity radii of the FGSM/PGD accuracy curves; an empty list turns them off.
    adversarial_epsilons: list[float] = Field(default=[0.05, 0.1])
    pgd_steps: int = Field(default=10, ge=1)
    # Randomized-smoothing certification (Cohen et al. 2019): off by default, it costs
    # (certify_n0 + certify_n) forward passes per certified image.
    certify: bool = False
    certify_sigma: float = Field(default=0.25, gt=0)
    certify_n0: int = Field(default=100, ge=1)
    certify_n: int = Field(default=1000, ge=1)
    certify_budget: int = Field(default=64, ge=1)
    # Selective prediction: the abstention threshold is chosen on validation so that at
    # least this share of images is answered; the rest is deferred to a human.
    target_coverage: float = Field(default=0.95, gt=0, le=1)
    # A column of the dataset's metadata.csv holding a group label per image (fairness
    # by group); empty: pseudo-groups from clusters of each class's embeddings.
    group_column: str = ""
    # Monitoring: images of an alarming production batch committed for a person to label,
    # and where production commits its batches (`tai serve` monitors them every hour).
    review_budget: int = Field(default=200, ge=1)
    inbox_branch: str = "inbox"
    inbox_prefix: str = "incoming"
    # Factors of variation of the data card: PCA, or FastICA on the same embedding.
    factor_method: Literal["pca", "ica"] = "pca"

    @field_validator("adversarial_epsilons")
    @classmethod
    def _epsilons_in_range(cls, value: list[float]) -> list[float]:
        bad = [e for e in value if not 0 < e <= 1]
        if bad:
            raise ValueError(f"every epsilon must be in (0, 1] (images are in [0, 1]); got {bad}")
        return sorted(set(value))

    @field_validator("data_repository", "registered_model_name", "experiment_name", "dataset")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _unfreezing_needs_a_frozen_backbone(self) -> Settings:
        if self.unfreeze_after_epochs is None:
            return self
        if not self.freeze_backbone:
            raise ValueError(
                "TAI_UNFREEZE_AFTER_EPOCHS needs TAI_FREEZE_BACKBONE=true (there is nothing "
                "frozen to unfreeze)"
            )
        if "ddp" in self.strategy.lower():
            # DDP syncs only the parameters that required gradients when it wrapped the
            # model: unfrozen ones would train apart on each process.
            raise ValueError(
                f"TAI_UNFREEZE_AFTER_EPOCHS does not work with TAI_STRATEGY={self.strategy}: "
                "train the head first, then fine-tune the whole model in a second run with "
                "TAI_PRETRAINED set to the first run's weights"
            )
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, *_, **__):
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    # Derived locations of the embedded stores.
    @property
    def workspace_dir(self) -> Path:
        return self.workspace.expanduser().resolve()

    @property
    def data_dir(self) -> Path:
        return self.workspace_dir / "data" / self.data_repository

    @property
    def cache_dir(self) -> Path:
        return self.workspace_dir / "cache"

    @property
    def reports_dir(self) -> Path:
        return self.workspace_dir / "reports"

    @property
    def prefect_home(self) -> Path:
        return self.workspace_dir / "prefect"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.workspace_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str | None:
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.tracking_uri.startswith(("http://", "https://")):
            return None  # the tracking server's own artifact store
        return (self.workspace_dir / "mlartifacts").as_uri()


# The project's environment variables that are not settings (the last three are the
# test suite's own switches, so a run of the suite never warns about them).
NOT_SETTINGS = frozenset(
    {
        "TAI_SETTINGS_FILE",
        "TAI_CODE_VERSION",
        "TAI_STACK_ID",
        "TAI_TESTS_NORMAL_EXIT",
        "TAI_LAKEFS_SPEC",
        "TAI_LAKEFS_TEST_STORAGE_NAMESPACE",
    }
)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """What to say of each ``TAI_*`` environment variable that names no setting, with the
    setting it most likely meant. Pydantic ignores them, so without this a misspelt
    setting silently keeps its default.

    Example:
        >>> unknown_variables({"TAI_BUDGET": "128", "TAI_MAX_EPOCHS": "2"})
        ['TAI_BUDGET is not a setting and is ignored; did you mean TAI_TAI_BUDGET?']
    """
    environ = os.environ if environ is None else environ
    names = [f"TAI_{field.upper()}" for field in Settings.model_fields]
    found = []
    for key in sorted(k for k in environ if k.upper().startswith("TAI_")):
        if key.upper() in names or key.upper() in NOT_SETTINGS:
            continue
        close = difflib.get_close_matches(key.upper(), names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "README, Settings, lists them"
        found.append(f"{key} is not a setting and is ignored; {hint}")
    return found


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning pydantic's errors into one readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from None


def _problem(err: dict) -> str:
    """One of pydantic's errors as the setting, what is wrong and the value given."""
    message = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a rule over several settings names them itself
        return message
    name = "TAI_" + "_".join(str(p) for p in err["loc"]).upper()
    return f"{name}: {message} (got {err.get('input')!r})"


def apply_environment(settings: Settings) -> None:
    """Point Prefect and MLflow at the workspace; call before importing either.

    Environment variables the user already set win, so a production Prefect or MLflow
    server configured the usual way is respected.
    """
    settings.workspace_dir.mkdir(parents=True, exist_ok=True)
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh Prefect database migrates at first start; on 2 busy cores that can pass 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # MLflow's per-file download progress bars would drown the CLI's own lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # matplotlib and torch's caches would otherwise go to ~.
    os.environ.setdefault("MPLCONFIGDIR", str(settings.workspace_dir / "matplotlib"))
