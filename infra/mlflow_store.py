"""MLflow tracking and model registry behind one small interface.

Embedded default: MLflow on SQLite in the workspace with a local artifact folder; in
production the same code talks to a tracking server (``TAI_MLFLOW_TRACKING_URI``).
Nothing happens at construction; the client and the experiment are made on first use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from infra.settings import Settings

CHAMPION = "champion"


class RegistryError(RuntimeError):
    """A registry operation failed; the message names the model and version."""


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]
    aliases: list[str]

    @property
    def is_champion(self) -> bool:
        return CHAMPION in self.aliases

    @property
    def gates_passed(self) -> bool:
        return self.tags.get("tai.gates.passed") == "true"


class MlflowStore:
    """Runs, artifacts, model versions and the ``champion`` alias of one registered model."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_name = settings.registered_model_name

    @cached_property
    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.settings.tracking_uri)

    @cached_property
    def experiment_id(self) -> str:
        name = self.settings.experiment_name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(name, artifact_location=self.settings.artifact_root)

    # -- runs ---------------------------------------------------------------------------
    def create_run(self, run_name: str, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        return run.info.run_id

    def end_run(self, run_id: str, *, failed: bool = False) -> None:
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, prefix: str = "") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(f"{prefix}{k}", float(v), now, 0) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)

    def test_metrics(self, run_id: str) -> dict[str, float]:
        """The ``test/`` metrics of a run, without the prefix."""
        data = self.client.get_run(run_id).data.metrics
        return {k.removeprefix("test/"): v for k, v in data.items() if k.startswith("test/")}

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_json(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self.client.log_text(run_id, json.dumps(obj, indent=2, sort_keys=True), artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_model(self, run_id: str, model: Any, input_example: Any) -> str:
        """Log a PyTorch model in MLflow 3's default ``pt2`` format; returns its URI."""
        import mlflow
        import mlflow.pytorch

        mlflow.set_tracking_uri(self.settings.tracking_uri)
        # Naming the requirements spares MLflow its slow inference of them (a subprocess
        # that re-imports the model's code).
        import torch

        requirements = [
            f"torch=={torch.__version__.split('+')[0]}",
            f"mlflow=={mlflow.__version__}",
        ]
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model, name="model", input_example=input_example, pip_requirements=requirements
            )
        return info.model_uri

    # -- registry -----------------------------------------------------------------------
    def register(self, model_uri: str, run_id: str, tags: Mapping[str, str]) -> str:
        """Create a new model version with all its tags in one call; returns the version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(
                self.model_name, description="Image classifier gated by TAI-MLOps"
            )
        mv = self.client.create_model_version(
            self.model_name, source=model_uri, run_id=run_id, tags=dict(tags)
        )
        return str(mv.version)

    def delete_version(self, version: str) -> None:
        self.client.delete_model_version(self.model_name, version)

    def set_champion(self, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, CHAMPION, version)

    def champion(self) -> ModelVersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.model_name, CHAMPION)
        except MlflowException:
            return None
        return self._info(mv)

    def log_weights(self, run_id: str, state_dict: Mapping[str, Any], config: Mapping) -> None:
        """Log a state dict and the config that rebuilds its module (``weights/``).

        The exported pt2 model serves predictions; this copy rebuilds the module itself
        (for explanations, which need ``eval()`` and gradients) and loads with
        ``weights_only=True``, so no pickle is ever executed.
        """
        import tempfile

        import torch

        with tempfile.TemporaryDirectory() as tmp:
            torch.save(dict(state_dict), Path(tmp) / "state_dict.pt")
            (Path(tmp) / "config.json").write_text(json.dumps(dict(config), sort_keys=True))
            self.client.log_artifacts(run_id, tmp, "weights")

    def load_json(self, run_id: str, artifact_file: str) -> Any:
        """A JSON artifact of a run (e.g. its TAI report)."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(run_id, artifact_file, tmp)
            return json.loads(Path(path).read_text())

    def load_weights(self, run_id: str) -> tuple[dict[str, Any], dict]:
        """The state dict and config logged by :meth:`log_weights`."""
        import tempfile

        import torch

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(self.client.download_artifacts(run_id, "weights", tmp))
            state = torch.load(folder / "state_dict.pt", weights_only=True)
            config = json.loads((folder / "config.json").read_text())
        return state, config

    def get_version(self, version: str) -> ModelVersionInfo:
        from mlflow.exceptions import MlflowException

        if version == CHAMPION:
            found = self.champion()
            if found is None:
                raise RegistryError(
                    f"model `{self.model_name}` has no `{CHAMPION}` yet; run `tai run` until a "
                    "version passes every gate"
                )
            return found
        try:
            return self._info(self.client.get_model_version(self.model_name, version))
        except MlflowException:
            known = ", ".join(v.version for v in self.list_versions()) or "none"
            raise RegistryError(
                f"model `{self.model_name}` has no version {version!r}; versions: {known}"
            ) from None

    def list_versions(self) -> list[ModelVersionInfo]:
        found = self.client.search_model_versions(f"name='{self.model_name}'")
        # search_model_versions leaves `aliases` empty; ask for the champion itself.
        champion = self.champion()
        versions = []
        for mv in found:
            info = self._info(mv)
            if champion and info.version == champion.version and not info.is_champion:
                info = ModelVersionInfo(
                    info.name, info.version, info.run_id, info.tags, [*info.aliases, CHAMPION]
                )
            versions.append(info)
        return sorted(versions, key=lambda v: int(v.version))

    def set_version_tag(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.model_name, version, key, value)

    def _info(self, mv: Any) -> ModelVersionInfo:
        return ModelVersionInfo(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            tags=dict(mv.tags),
            aliases=list(getattr(mv, "aliases", []) or []),
        )
