"""Data engineering: resolve the data version, materialise it, validate and profile it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.lineage import code_version
from flows.tasks._retry import retry_transient
from infra.datastore.base import DataStore, DataVersion
from tai.data.card import build_data_card, factor_traversals
from tai.data.images import DECODED_CACHE_BYTES
from tai.data.profile import DatasetError, decoded_images_kept
from tai.report.figures.canvas import figure_png
from tai.report.figures.data import factor_traversal_figure


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def resolve_data_version(store: DataStore, ref: str) -> DataVersion:
    """Pin a branch (or commit id) to one commit id for the whole run."""
    version = store.version(ref)
    get_run_logger().info("data %s@%s -> commit %s", store.repository, ref, version.commit_id)
    return version


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def materialize(store: DataStore, version: DataVersion) -> Path:
    """A read-only local copy of the commit (cached by commit id)."""
    return store.materialize(version.commit_id)


def _card_path(cache_dir: Path, version: DataVersion, options: dict[str, str]) -> Path:
    key = f"{version.store}-{version.repository}-{version.commit_id}-{code_version()}"
    if any(options.values()):
        key += "-" + hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / "datacards" / f"{key}.json"


@dataclass(frozen=True)
class DataCard:
    """The data card of a commit and its factor-traversal figure (PNG file)."""

    card: dict
    factors_png: Path


@task(cache_policy=NO_CACHE)
def data_card(
    root: Path,
    dataset: str,
    version: DataVersion,
    cache_dir: Path,
    seed: int,
    group_column: str = "",
    factor_method: str = "pca",
) -> DataCard:
    """Validate the dataset and profile it; cached by (commit, code version, options).

    Raises:
        tai.data.profile.DatasetError: the dataset is malformed (missing split, empty
            class, undecodable image, ...). Nothing is trained or registered then.
    """
    options = {
        "group_column": group_column,
        "factor_method": "" if factor_method == "pca" else factor_method,
    }
    path = _card_path(cache_dir, version, options)
    png = path.with_suffix(".factors.png")
    if path.is_file() and png.is_file():
        get_run_logger().info("data card of commit %s from cache", version.commit_id)
        return DataCard(json.loads(path.read_text()), png)
    # The card and the traversals read the same training images: decoded once for both.
    with decoded_images_kept(DECODED_CACHE_BYTES):
        try:
            card = build_data_card(
                root, dataset, group_column=group_column, factor_method=factor_method, seed=seed
            )
        except DatasetError as exc:
            # Name the file as it is in the repository, not in the local cache.
            where = str(exc).replace(f"{root}/", "")
            raise DatasetError(
                f"data commit {version.commit_id} of {version.repository}: {where}"
            ) from None
        traversals = factor_traversals(root, dataset, seed=seed)
    card = {**card, "data_version": version.as_tags(), "code_version": code_version()}
    # The figure first: the card's JSON is what marks the cache entry complete.
    write_atomically(png, figure_png(factor_traversal_figure(*traversals)))
    write_atomically(path, json.dumps(card, indent=2, sort_keys=True))
    return DataCard(card, png)


def write_atomically(path: Path, content: str | bytes) -> None:
    """Write next to ``path``, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
