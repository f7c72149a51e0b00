"""Where a secret of the settings could have leaked into MLflow's stores (for tests)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import SecretStr

from infra.settings import Settings


def secret_values(settings: Settings) -> dict[str, str]:
    """Every non-empty ``SecretStr`` setting, by name: new secret fields are covered too."""
    return {
        name: value.get_secret_value()
        for name in type(settings).model_fields
        if isinstance(value := getattr(settings, name), SecretStr) and value.get_secret_value()
    }


def mlflow_leaks(settings: Settings, secrets: dict[str, str]) -> list[str]:
    """Where in MLflow's stores a secret value lies: runs' params, tags, metric names,
    registered models' and versions' tags and descriptions, every artifact file and the
    tracking database itself. An empty list means nothing leaked."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    texts: dict[str, str] = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            where = f"run {run.info.run_id}"
            texts[f"{where} name"] = run.info.run_name or ""
            texts[f"{where} params"] = json.dumps(run.data.params)
            texts[f"{where} tags"] = json.dumps(run.data.tags)
            texts[f"{where} metrics"] = json.dumps(sorted(run.data.metrics))
    for model in client.search_registered_models():
        texts[f"model {model.name}"] = f"{model.description} {json.dumps(model.tags)}"
        for mv in client.search_model_versions(f"name='{model.name}'"):
            texts[f"{model.name} v{mv.version}"] = f"{mv.description} {json.dumps(mv.tags)}"
    found = [
        f"{name} in {where}"
        for where, text in texts.items()
        for name, secret in secrets.items()
        if secret in text
    ]
    files = [Path(unquote(urlparse(settings.artifact_root).path)), settings.workspace_dir]
    for path in {p for folder in files if folder.exists() for p in folder.rglob("*")}:
        if path.is_file():
            data = path.read_bytes()
            found += [f"{name} in {path}" for name, s in secrets.items() if s.encode() in data]
    return found
