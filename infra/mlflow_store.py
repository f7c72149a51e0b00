"""MLflow tracking and model registry behind one small interface.

Embedded default: MLflow on SQLite in the workspace with a local artifact folder; in
production the same code talks to a tracking server (``TAI_MLFLOW_TRACKING_URI``).
Nothing happens at construction; the client and the experiment are made on first use.

Security (see :mod:`infra.integrity`): the weights' sha256 is recorded as an immutable run
param when they are logged and as a model-version tag at registration, together with one
digest of every file of the servable model; :meth:`MlflowStore.load_weights` and
:meth:`MlflowStore.load_pyfunc` refuse files that do not match. No value of a secret setting
(a ``SecretStr`` field of :class:`~infra.settings.Settings`) is ever written: params, tags,
text and JSON artifacts are redacted, and a file holding a secret is refused.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from infra.integrity import (
    MODEL_SHA256_TAG,
    WEIGHTS_FILE,
    WEIGHTS_SHA256_TAG,
    IntegrityError,
    RegistryError,
    load_verified_state_dict,
    manifest_sha256,
    sha256_hex,
    verify_sha256,
)
from infra.settings import Settings
from tai import tags
from tai.tags import REGISTRATION, REGISTRATION_COMPLETE, REGISTRATION_PENDING

__all__ = [
    "CHAMPION",
    "ArtifactStoreError",
    "MODEL_SHA256_TAG",
    "WEIGHTS_SHA256_TAG",
    "IntegrityError",
    "MlflowStore",
    "ModelVersionInfo",
    "RegistryError",
]

CHAMPION = "champion"
REDACTED = "**********"  # as pydantic shows a SecretStr
_REDACTED_KEY = "REDACTED"  # MLflow keys allow no "*"
# The packages the pyfunc imports, copied into the model (``code_paths``) so that it serves
# where the project is not installed; only these file types (the package data in
# pyproject.toml), never deployment files or caches.
_MODEL_CODE_PACKAGES = ("tai", "infra")
_MODEL_CODE_SUFFIXES = (".py", ".yaml", ".html", ".j2")
# Error codes with which a server answered a request (the run or version does not exist, the
# request is wrong): asking again changes nothing. Any other failure (no connection, a 5xx
# answer, a time-out) may pass, so :func:`retrying` tries again.
_ANSWERS = frozenset(
    {
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_PARAMETER_VALUE",
        "INVALID_STATE",
        "BAD_REQUEST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    }
)
T = TypeVar("T")


class ArtifactStoreError(RegistryError):
    """The artifact store refused a file while the tracking server answered (e.g. it is
    full); the message names the store, the file and its size."""


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
        return self.tags.get(tags.GATES_PASSED) == "true"

    @property
    def complete(self) -> bool:
        """Whether its registration finished (``tai.registration=complete``). A version
        registered before the tag existed has none and counts as complete; the pipeline
        creates each version ``pending`` (in the same call), so none of its versions is
        ever without the tag."""
        return self.tags.get(REGISTRATION, REGISTRATION_COMPLETE) == REGISTRATION_COMPLETE


class MlflowStore:
    """Runs, artifacts, model versions and the ``champion`` alias of one registered model."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_name = settings.registered_model_name

    @cached_property
    def client(self):
        from mlflow import MlflowClient

        from infra.db_templates import ensure_tracking_db

        ensure_tracking_db(self.settings.tracking_uri)  # a new workspace's, from a template
        return MlflowClient(tracking_uri=self.settings.tracking_uri)

    @cached_property
    def experiment_id(self) -> str:
        return self._experiment(self.settings.experiment_name)

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(name, artifact_location=self.settings.artifact_root)

    # -- runs ---------------------------------------------------------------------------
    def create_run(
        self, run_name: str, tags: Mapping[str, str], *, experiment: str | None = None
    ) -> str:
        """A new run in the settings' experiment, or in ``experiment`` (by name)."""
        experiment_id = self._experiment(experiment) if experiment else self.experiment_id
        run = self.client.create_run(
            experiment_id, run_name=self._scrub(run_name), tags=self._scrub_map(tags)
        )
        return run.info.run_id

    def delete_run(self, run_id: str) -> None:
        """Remove a run that must not be read as evidence (one that failed half-way)."""
        self.client.delete_run(run_id)

    def runs(self, experiment: str, filter_string: str = "") -> list[Any]:
        """The finished runs of an experiment (by name), oldest first; none if it is new."""
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs = self.client.search_runs(
            [found.experiment_id],
            filter_string=" and ".join(filter(None, [filter_string, "status = 'FINISHED'"])),
            order_by=["attributes.start_time ASC"],
            max_results=10_000,
        )
        return list(runs)

    def end_run(self, run_id: str, *, failed: bool = False, retry_for_s: float = 0.0) -> None:
        """Mark a run FINISHED (or FAILED), trying again for up to ``retry_for_s`` seconds
        while the tracking server does not answer (see :func:`retrying`)."""
        status = "FAILED" if failed else "FINISHED"
        retrying(
            lambda: self.client.set_terminated(run_id, status=status),
            for_s=retry_for_s,
        )

    def resume_run(self, run_id: str) -> None:
        """Mark a run RUNNING again after a library ended it early (Lightning's logger ends
        the run when fitting ends): a pipeline's run is RUNNING until the pipeline ends it,
        which is how a later run tells a run whose pipeline died (``fail_orphaned_runs``)."""
        self.client.update_run(run_id, status="RUNNING")

    def running_runs(self) -> list[tuple[str, dict[str, str]]]:
        """``(run id, tags)`` of every run of the settings' experiment still RUNNING."""
        found = self.client.get_experiment_by_name(self.settings.experiment_name)
        if found is None:
            return []
        runs = self.client.search_runs(
            [found.experiment_id],
            filter_string="attributes.status = 'RUNNING'",
            max_results=10_000,
        )
        return [(run.info.run_id, dict(run.data.tags)) for run in runs]

    def run_ended(self, run_id: str) -> bool:
        """Whether a run is over: not RUNNING (or SCHEDULED), deleted, or gone."""
        from mlflow.exceptions import MlflowException

        try:
            info = self.client.get_run(run_id).info
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return True
            raise
        return info.lifecycle_stage == "deleted" or info.status not in ("RUNNING", "SCHEDULED")

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, prefix: str = "") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(self._scrub_key(f"{prefix}{k}"), float(v), now, 0) for k, v in metrics.items()
        ]
        self.client.log_batch(run_id, metrics=batch)

    def test_metrics(self, run_id: str) -> dict[str, float]:
        """The ``test/`` metrics of a run, without the prefix."""
        data = self.client.get_run(run_id).data.metrics
        return {k.removeprefix("test/"): v for k, v in data.items() if k.startswith("test/")}

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        scrubbed = self._scrub_map({k: str(v) for k, v in params.items()})
        self.client.log_batch(run_id, params=[Param(k, v) for k, v in scrubbed.items()])

    def log_json(self, run_id: str, obj: Any, artifact_file: str) -> None:
        text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
        self.log_text(run_id, text, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Log a text file (secret settings' values redacted).

        Raises:
            ArtifactStoreError: the artifact store refused the file (see :meth:`_uploading`).
        """
        text = self._scrub(text)
        with self._uploading(run_id, artifact_file, len(text.encode())):
            self.client.log_text(run_id, text, artifact_file)

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Log a file as it is; refuses one that holds a secret setting's value.

        Raises:
            RegistryError: the file holds the value of a secret setting.
            ArtifactStoreError: the artifact store refused the file (see :meth:`_uploading`).
        """
        data = Path(path).read_bytes()
        for name, secret in self._secrets.items():
            if secret.encode() in data:
                raise RegistryError(
                    f"refusing to log {path} to run {run_id}: it holds the value of the secret "
                    f"setting `{name}`; remove the secret from the file."
                )
        name = f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name
        with self._uploading(run_id, name, len(data)):
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_model(
        self,
        run_id: str,
        input_example: Any,
        *,
        classes: Sequence[str],
        defer_threshold: float | None = None,
        max_pixels: int | None = None,
        max_batch: int | None = None,
    ) -> str:
        """Log the servable pyfunc (:mod:`infra.pyfunc_model`) built from the run's weights.

        The model is the weights logged by :meth:`log_weights` for this run (checked against
        the run's recorded sha256 first), their config, the class labels and the abstention
        threshold; it is logged as *models from code* (nothing pickled), with copies of the
        ``tai`` and ``infra`` packages as ``code_paths`` so that it serves where the project
        is not installed, and with its requirements named (sparing MLflow a slow inference).
        The run keeps its status (MLflow's ``start_run`` would leave it FINISHED).

        Args:
            run_id: the run whose weights are served.
            input_example: a float array ``(N, C, H, W)`` in ``[0, 1]`` of real inputs
                (N >= 2). The served model takes images of any size and mode and fits
                them to its input as training did.
            classes: the class labels, in output order.
            defer_threshold: the pyfunc answers ``"defer_to_human"`` below this calibrated
                confidence; ``None`` never defers.
            max_pixels: most ``H * W`` per request image (default
                :data:`~infra.pyfunc_model.DEFAULT_MAX_PIXELS`).
            max_batch: most images per request (default
                :data:`~infra.pyfunc_model.DEFAULT_MAX_BATCH`).

        Returns:
            The model's URI (``models:/<model id>``), to pass to :meth:`register`.

        Raises:
            IntegrityError: the run's weights do not match their recorded sha256.
            RegistryError: the run has no weights.
            ValueError: a bad class list, threshold, limit or input example.
        """
        import mlflow
        import numpy as np

        from infra import pyfunc_model

        example = np.asarray(
            input_example.detach().cpu().numpy()
            if hasattr(input_example, "detach")
            else input_example,
            dtype=np.float32,
        )
        if example.ndim != 4 or example.shape[0] < 1:
            raise ValueError(
                f"Expected `input_example` of shape (N, C, H, W), but got {example.shape}. "
                "Pass a few test images."
            )
        limits = {
            "max_pixels": pyfunc_model.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
            "max_batch": pyfunc_model.DEFAULT_MAX_BATCH if max_batch is None else max_batch,
        }
        mlflow.set_tracking_uri(self.settings.tracking_uri)
        status = self.client.get_run(run_id).info.status
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            weights = self._download(run_id, "weights", folder / "download")
            data = (weights / WEIGHTS_FILE).read_bytes()
            sha256 = verify_sha256(
                data, self._recorded_weights_sha256(run_id), source=self._weights_name(run_id)
            )
            weights_config = json.loads((weights / "config.json").read_text())
            config = pyfunc_model.serving_config(
                weights_config,
                weights_sha256=sha256,
                classes=classes,
                # Weights logged without their input size take the example's.
                image_shape=None if weights_config.get("image_size") else example.shape[1:],
                defer_threshold=defer_threshold,
                **limits,
            )
            pyfunc_model.validate_images(example, **limits)
            (folder / "serving_config.json").write_text(json.dumps(config, sort_keys=True))
            (folder / "tai_classifier.py").write_text(pyfunc_model.MODEL_CODE)
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(folder / "tai_classifier.py"),
                    artifacts={
                        "weights": str(weights / WEIGHTS_FILE),
                        "config": str(folder / "serving_config.json"),
                    },
                    model_config={"expected_weights_sha256": ""},
                    code_paths=_stage_model_code(folder / "code", config),
                    signature=pyfunc_model.model_signature(),
                    input_example=example,
                    pip_requirements=_model_requirements(config),
                )
        if status != "FINISHED":  # leaving `start_run` ended it; its owner ends it
            self.client.update_run(run_id, status=status)
        return info.model_uri

    def load_pyfunc(self, version: str = CHAMPION):
        """The servable pyfunc of a model version, after checking every file of it.

        The model is downloaded, its files digested and compared with the version's
        ``tai.model_sha256`` tag, and loaded from that checked copy; the pyfunc checks its
        weights against the version's ``tai.weights_sha256`` tag as well.

        Raises:
            RegistryError: no such version (or no champion).
            IntegrityError: a file differs from what was registered, or nothing is recorded.
        """
        import mlflow

        info = self.get_version(version)
        source = f"model `{self.model_name}` version {info.version}"
        with tempfile.TemporaryDirectory() as tmp:
            folder = self._download_model(f"models:/{self.model_name}/{info.version}", tmp)
            verify_manifest(folder, info.tags.get(MODEL_SHA256_TAG), source=source)
            expected = info.tags.get(WEIGHTS_SHA256_TAG)
            if expected is None:
                raise IntegrityError(
                    f"{source} has no `{WEIGHTS_SHA256_TAG}` tag, so its weights cannot be "
                    "checked; refusing to load it. Re-register it from a trusted run."
                )
            return mlflow.pyfunc.load_model(
                str(folder), model_config={"expected_weights_sha256": expected}
            )

    # -- registry -----------------------------------------------------------------------
    def register(
        self, model_uri: str, run_id: str, tags: Mapping[str, str], *, complete: bool = True
    ) -> str:
        """Create a new model version with all its tags in one call; returns the version.

        Besides ``tags`` the version records the run's weights digest
        (``tai.weights_sha256``, when the run logged weights), one digest of every file of
        the model (``tai.model_sha256``), which :meth:`load_pyfunc` checks, and
        ``tai.registration``: ``complete``, or with ``complete=False`` ``pending`` until
        :meth:`complete_registration` (or :meth:`set_champion`); a pending version is left
        out of :meth:`list_versions` and is never :meth:`champion`.

        Raises:
            IntegrityError: ``tags`` name a weights digest other than the run's.
        """
        from mlflow.exceptions import MlflowException

        state = REGISTRATION_COMPLETE if complete else REGISTRATION_PENDING
        tags = {**self._scrub_map(tags), REGISTRATION: state}
        recorded = self._run_data(run_id).params.get(WEIGHTS_SHA256_TAG)
        given = tags.get(WEIGHTS_SHA256_TAG)
        if given is not None and recorded is not None and given != recorded:
            raise IntegrityError(
                f"the tag {WEIGHTS_SHA256_TAG}={given} differs from the digest {recorded} "
                f"recorded by run {run_id} when its weights were logged; not registering."
            )
        if recorded is not None:
            tags[WEIGHTS_SHA256_TAG] = recorded
        with tempfile.TemporaryDirectory() as tmp:
            tags[MODEL_SHA256_TAG] = manifest_sha256(self._download_model(model_uri, tmp))

        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(
                self.model_name, description="Image classifier gated by TAI-MLOps"
            )
        # A logged model's URI is `models:/<model id>`; a tracking server wants its id too.
        rest = model_uri.removeprefix("models:/")
        model_id = rest if rest != model_uri and "/" not in rest else None
        mv = self.client.create_model_version(
            self.model_name, source=model_uri, run_id=run_id, tags=dict(tags), model_id=model_id
        )
        return str(mv.version)

    def version_of_run(self, run_id: str) -> ModelVersionInfo | None:
        """The version registered from ``run_id``, complete or not (check ``.complete``):
        a retry of the run's registration reuses it and completes it."""
        found = self.client.search_model_versions(f"name='{self.model_name}' and run_id='{run_id}'")
        return self._info(found[0]) if found else None

    def complete_registration(self, version: str) -> None:
        """The last step of a registration: tag the version ``tai.registration=complete``."""
        self.client.set_model_version_tag(
            self.model_name, version, REGISTRATION, REGISTRATION_COMPLETE
        )

    def incomplete_versions(self) -> list[ModelVersionInfo]:
        """The versions whose registration has not completed (``pending``), oldest first."""
        found = self.client.search_model_versions(f"name='{self.model_name}'")
        pending = [v for v in map(self._info, found) if not v.complete]
        return sorted(pending, key=lambda v: int(v.version))

    def delete_version(self, version: str) -> None:
        self.client.delete_model_version(self.model_name, version)

    def set_champion(self, version: str) -> None:
        """Move the alias to ``version``, completing its registration first: the alias only
        ever points at a complete version (a person's approval of a version whose flow run
        died completes it here)."""
        self.complete_registration(version)
        self.client.set_registered_model_alias(self.model_name, CHAMPION, version)

    def champion(self) -> ModelVersionInfo | None:
        """The version the alias points at; None when there is none (or, which
        :meth:`set_champion` rules out, when its registration is not complete)."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.model_name, CHAMPION)
        except MlflowException as exc:
            # No such model or alias: no champion. Anything else (an unreachable or failing
            # server) is no answer, and must not be taken for "no champion".
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        info = self._info(mv)
        return info if info.complete else None

    def log_weights(self, run_id: str, state_dict: Mapping[str, Any], config: Mapping) -> str:
        """Log a state dict and the config that rebuilds its module (``weights/``).

        The sha256 of the exact bytes of ``state_dict.pt`` is recorded on the run as the
        param and tag ``tai.weights_sha256`` (a param cannot be changed once logged), where
        whoever can write to the artifact store cannot update it; :meth:`register` copies it
        onto the model version. The module is rebuilt from this copy (for explanations,
        which need ``eval()`` and gradients) and loads with ``weights_only=True``, so no
        pickle is ever executed.

        Returns:
            The sha256 of ``state_dict.pt`` (64 hex digits).

        Raises:
            RegistryError: the run already logged different weights.
        """
        import io

        import torch
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        buffer = io.BytesIO()
        torch.save(dict(state_dict), buffer)
        data = buffer.getvalue()
        sha256 = sha256_hex(data)
        try:
            self.client.log_batch(
                run_id,
                params=[Param(WEIGHTS_SHA256_TAG, sha256)],
                tags=[RunTag(WEIGHTS_SHA256_TAG, sha256)],
            )
        except MlflowException as err:
            logged = self._run_data(run_id).params.get(WEIGHTS_SHA256_TAG)
            if logged is None or logged == sha256:
                raise
            raise RegistryError(
                f"run {run_id} already logged weights with sha256 {logged}, not {sha256}; "
                "a run's weights cannot be replaced: log them in a new run."
            ) from err
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / WEIGHTS_FILE).write_bytes(data)
            text = json.dumps(dict(config), sort_keys=True, default=_json_default)
            (Path(tmp) / "config.json").write_text(self._scrub(text))
            # One file at a time, so that a refusal names the file (see _uploading).
            for name in (WEIGHTS_FILE, "config.json"):
                path = Path(tmp) / name
                with self._uploading(run_id, f"weights/{name}", path.stat().st_size):
                    self.client.log_artifact(run_id, str(path), "weights")
        return sha256

    def download_artifacts(self, run_id: str, artifact_path: str, dst: Path) -> Path:
        """A run's artifact (file or folder) downloaded under ``dst``; its local path.

        Raises:
            RegistryError: the run has no such artifact.
        """
        return self._download(run_id, artifact_path, dst)

    def load_json(self, run_id: str, artifact_file: str) -> Any:
        """A JSON artifact of a run (e.g. its TAI report)."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(run_id, artifact_file, tmp)
            return json.loads(Path(path).read_text())

    def load_weights(
        self, run_id: str, *, expected_sha256: str | None = None
    ) -> tuple[dict[str, Any], dict]:
        """The state dict and config logged by :meth:`log_weights`, after an integrity check.

        The file's sha256 must equal the digest recorded on the run (param and tag) and
        ``expected_sha256`` when given (e.g. the model version's ``tai.weights_sha256`` tag);
        only then is it loaded, with ``weights_only=True``.

        Raises:
            IntegrityError: the file differs from a recorded digest, or none is recorded.
            RegistryError: the run has no weights.
        """
        with tempfile.TemporaryDirectory() as tmp:
            folder = self._download(run_id, "weights", Path(tmp))
            state = load_verified_state_dict(
                folder / WEIGHTS_FILE,
                [*self._recorded_weights_sha256(run_id), expected_sha256],
                source=self._weights_name(run_id),
            )
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
        """The versions whose registration completed, oldest first (a pending one is left
        out: it is being registered, or its run failed and the next run deletes it)."""
        found = self.client.search_model_versions(f"name='{self.model_name}'")
        # search_model_versions leaves `aliases` empty; ask for the champion itself.
        champion = self.champion()
        versions = []
        for mv in found:
            info = self._info(mv)
            if not info.complete:
                continue
            if champion and info.version == champion.version and not info.is_champion:
                info = ModelVersionInfo(
                    info.name, info.version, info.run_id, info.tags, [*info.aliases, CHAMPION]
                )
            versions.append(info)
        return sorted(versions, key=lambda v: int(v.version))

    def set_version_tag(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(
            self.model_name, version, self._scrub_key(key), self._scrub(value)
        )

    # -- helpers ------------------------------------------------------------------------
    @cached_property
    def _secrets(self) -> dict[str, str]:
        """The values of the secret settings, by field name (empty ones left out)."""
        found = {}
        for name in type(self.settings).model_fields:
            value = getattr(self.settings, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found[name] = value.get_secret_value()
        return found

    def _scrub(self, text: str, marker: str = REDACTED) -> str:
        """``text`` with every secret setting's value replaced by ``marker``."""
        for secret in sorted(self._secrets.values(), key=len, reverse=True):
            text = text.replace(secret, marker)
        return text

    def _scrub_key(self, key: str) -> str:
        return self._scrub(key, _REDACTED_KEY)

    def _scrub_map(self, values: Mapping[str, str]) -> dict[str, str]:
        return {self._scrub_key(str(k)): self._scrub(str(v)) for k, v in values.items()}

    def _run_data(self, run_id: str) -> Any:
        return self.client.get_run(run_id).data

    @contextlib.contextmanager
    def _uploading(self, run_id: str, name: str, size: int) -> Iterator[None]:
        """Name the cause when the artifact store refuses a file.

        A full artifact store behind a tracking server answers an upload with HTTP 500, and
        the client reports only "too many 500 error responses". When an upload fails but
        the tracking server still answers (the run can be read), the artifact store refused
        the file: that is raised as one line naming the store, the file and its size. When
        the server does not answer either, the upload's own error is raised (it is down).

        Raises:
            ArtifactStoreError: the upload failed while the tracking server answered.
        """
        import requests
        from mlflow.exceptions import MlflowException

        try:
            yield
        except (MlflowException, OSError, requests.RequestException) as err:
            try:
                uri = self.client.get_run(run_id).info.artifact_uri
            except Exception:  # the server does not answer: not the artifact store's doing
                uri = None
            if uri is None:
                raise
            raise ArtifactStoreError(
                f"the artifact store at {uri} refused {name} ({size} bytes): is it full? "
                "see the tracking server's log"
            ) from err

    def _recorded_weights_sha256(self, run_id: str) -> list[str | None]:
        data = self._run_data(run_id)
        return [data.params.get(WEIGHTS_SHA256_TAG), data.tags.get(WEIGHTS_SHA256_TAG)]

    def _weights_name(self, run_id: str) -> str:
        return f"weights/{WEIGHTS_FILE} of run {run_id}"

    def _download(self, run_id: str, artifact_path: str, dst: Path) -> Path:
        from mlflow.exceptions import MlflowException

        dst.mkdir(parents=True, exist_ok=True)
        try:
            folder = Path(self.client.download_artifacts(run_id, artifact_path, str(dst)))
        except (MlflowException, OSError) as err:
            raise RegistryError(
                f"run {run_id} has no `{artifact_path}` artifact ({err}); was it logged?"
            ) from err
        if not folder.exists():
            raise RegistryError(f"run {run_id} has no `{artifact_path}` artifact; was it logged?")
        return folder

    def _download_model(self, model_uri: str, dst: str) -> Path:
        import mlflow

        mlflow.set_tracking_uri(self.settings.tracking_uri)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst))

    def _info(self, mv: Any) -> ModelVersionInfo:
        return ModelVersionInfo(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            tags=dict(mv.tags),
            aliases=list(getattr(mv, "aliases", []) or []),
        )


def retrying(call: Callable[[], T], *, for_s: float, first_delay_s: float = 1.0) -> T:
    """``call()``, tried again with back-off (1, 2, 4, ... s) while it fails for a reason
    that may pass (the server does not answer, or answers 5xx), until ``for_s`` seconds have
    passed since the first try; then its last error is raised. An answer from the server
    (the run or version does not exist, a bad request: :data:`_ANSWERS`) is raised at once.

    Each try is one client call with the client's own retries (``MLFLOW_HTTP_REQUEST_*``),
    so the total can exceed ``for_s`` by one call; with ``for_s=0`` it is tried once.
    """
    import requests
    from mlflow.exceptions import MlflowException

    deadline = time.monotonic() + for_s
    delay = first_delay_s
    while True:
        try:
            return call()
        except MlflowException as exc:
            if exc.error_code in _ANSWERS or time.monotonic() + delay > deadline:
                raise
        except (OSError, requests.RequestException):  # ConnectionError, TimeoutError, ...
            if time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay *= 2


def verify_manifest(folder: Path, expected: str | None, *, source: str) -> str:
    """Check the digest of every file of a downloaded model (see ``manifest_sha256``)."""
    if expected is None:
        raise IntegrityError(
            f"{source} has no `{MODEL_SHA256_TAG}` tag, so its files cannot be checked; "
            "refusing to load it. Re-register it from a trusted run."
        )
    actual = manifest_sha256(folder)
    if actual != expected:
        raise IntegrityError(
            f"the files of {source} have been modified: their digest is {actual}, but "
            f"{expected} was recorded at registration; refusing to load it. Do not serve "
            "this model: re-register it from a trusted run."
        )
    return actual


def _stage_model_code(dst: Path, config: Mapping[str, Any]) -> list[str]:
    """Copies of the packages the pyfunc imports, without caches and deployment files, and
    of a user's model factory (its top-level package or module), so the served model
    rebuilds it where neither is installed."""
    import importlib

    from tai.modeling.models import model_code_paths

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [
            n
            for n in names
            if n == "__pycache__"
            or (Path(folder, n).is_file() and not n.endswith(_MODEL_CODE_SUFFIXES))
        ]

    sources = [
        Path(importlib.import_module(package).__file__).parent for package in _MODEL_CODE_PACKAGES
    ]
    staged = []
    for source in [*sources, *model_code_paths(config)]:
        if source.is_dir():
            shutil.copytree(source, dst / source.name, ignore=ignore)
        else:
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dst / source.name)
        staged.append(str(dst / source.name))
    return staged


def _model_requirements(config: Mapping[str, Any]) -> list[str]:
    """The served model's pip requirements at this environment's versions (torchvision
    always: the pyfunc resizes with it)."""
    import mlflow
    import numpy
    import pandas
    import torch

    from tai.modeling.models import model_requirements

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={numpy.__version__}",
        f"pandas=={pandas.__version__}",
        *model_requirements(config),
    ]


def _json_default(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
