"""Builds the configured outside systems from settings (the composition root's wiring)."""

from __future__ import annotations

from infra.datastore.base import DataStore
from infra.settings import Settings, SettingsError


def make_data_store(settings: Settings) -> DataStore:
    """The data store the settings name: embedded Oxen by default."""
    if settings.data_store == "oxen":
        from infra.datastore.oxen_store import OxenDataStore

        return OxenDataStore(
            settings.data_dir, settings.cache_dir / "data", repository=settings.data_repository
        )
    raise SettingsError(
        f"TAI_DATA_STORE={settings.data_store!r} is not available in this version; "
        "use TAI_DATA_STORE=oxen"
    )
