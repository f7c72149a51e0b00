"""Builds the configured outside systems from settings (the composition root's wiring)."""

from __future__ import annotations

from infra.datastore.base import DataStore
from infra.settings import Settings, SettingsError


def make_data_store(settings: Settings) -> DataStore:
    """The data store the settings name: embedded Oxen by default, or lakeFS."""
    if settings.data_store == "oxen":
        from infra.datastore.oxen_store import OxenDataStore

        return OxenDataStore(
            settings.data_dir, settings.cache_dir / "data", repository=settings.data_repository
        )
    if settings.data_store == "lakefs":
        from infra.datastore.lakefs_store import LakeFSDataStore

        return LakeFSDataStore(
            settings.data_repository,
            settings.cache_dir / "data",
            endpoint=settings.lakefs_endpoint or None,
            access_key_id=settings.lakefs_access_key_id or None,
            secret_access_key=settings.lakefs_secret_access_key.get_secret_value() or None,
            storage_namespace=settings.lakefs_storage_namespace or None,
            max_workers=settings.lakefs_max_workers,
        )
    raise SettingsError(f"TAI_DATA_STORE={settings.data_store!r}; use oxen or lakefs")
