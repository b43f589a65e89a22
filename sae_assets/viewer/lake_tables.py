"""The viewer's read side of the lake: Delta tables opened once and refreshed on every read, one partition's
parquet files at the table's current version, and a small LRU of values derived from a partition at one version.

Values derived from a whole partition (the co-occurrence marginals, the embedding matrix, the label index) are
cached under a key that holds the Delta version(s) they were read at, so a re-materialized partition is seen by
the next read (its table moves to a new version) while an unchanged one is never read twice. Plain polars and
deltalake: no Dagster. Thread-safe: uvicorn runs the API's handlers on a thread pool.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import polars as pl
from deltalake import DeltaTable, QueryBuilder
from deltalake.exceptions import DeltaError

from sae_assets.storage.delta import open_table, partition_predicate, root_uri, table_uri

log = logging.getLogger(__name__)
T = TypeVar("T")

TABLE_ASSET = {"feature_map_edges": "feature_map"}
"""Tables written by an asset of another name (the rest are their asset's name)."""


def asset_of(table: str) -> str:
    """The asset that writes ``table``: what to materialize when it is missing."""
    return TABLE_ASSET.get(table, table)


@dataclass(frozen=True)
class Partition:
    """One model × layer partition of a table at one Delta version: its parquet files (absolute URIs)."""

    table: str
    model: str
    layer: str
    version: int
    files: tuple[str, ...]
    storage_options: dict[str, str] | None = field(default=None, compare=False)

    def scan(self) -> pl.LazyFrame:
        """The partition's rows (without the partition columns, which the files do not hold)."""
        return pl.scan_parquet(list(self.files), hive_partitioning=False, storage_options=self.storage_options)

    def columns(self) -> list[str]:
        return list(self.scan().collect_schema().names())

    def rows(self, columns: list[str], where: pl.Expr) -> pl.DataFrame:
        """The rows matching ``where``, only ``columns`` (those the table lacks come back as null strings): the
        filter and the projection go into the parquet scan, so row-group statistics prune on sorted columns."""
        have = set(self.columns())
        frame = self.scan().filter(where).select([c for c in columns if c in have]).collect()
        return frame.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in columns if c not in have)


class LakeTables:
    """Tables of the lake at ``root`` (a path or a deltalake URI); see the module docstring."""

    def __init__(self, root: str, storage_options: dict[str, str] | None = None, cache_size: int = 32) -> None:
        self.root = root_uri(root)
        self.storage_options = storage_options or None
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._tables: dict[str, DeltaTable] = {}
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()

    def uri(self, table: str) -> str:
        return table_uri(self.root, table)

    def _current(self, table: str) -> DeltaTable | None:
        """The table at its latest version (opened once, then refreshed); None when there is none. Lock held."""
        cached = self._tables.get(table)
        if cached is not None:
            try:
                cached.update_incremental()
                return cached
            except (DeltaError, OSError) as err:  # deleted or replaced under us: open it afresh
                log.info("re-opening %s: %s", self.uri(table), err)
                del self._tables[table]
        opened = open_table(self.uri(table), self.storage_options)
        if opened is not None:
            self._tables[table] = opened
        return opened

    def partition(self, table: str, model: str, layer: int | str) -> Partition | None:
        """Partition (model, layer) of ``table`` at its current version; None when the table or the partition
        does not exist."""
        filters = [("model", "=", model), ("layer", "=", str(layer))]
        with self._lock:
            delta = self._current(table)
            if delta is None:
                return None
            version, files = delta.version(), tuple(delta.file_uris(file_pruning_predicate=filters))
        if not files:
            return None
        return Partition(table, model, str(layer), version, files, self.storage_options)

    def query(self, part: Partition, columns: list[str], where: str) -> pl.DataFrame:
        """``columns`` of the partition's rows matching the SQL condition ``where`` (on trusted values only), read
        by DataFusion, which decodes only the matching rows of list columns (polars decodes them whole)."""
        names = ", ".join(f'"{c}"' for c in columns)
        sql = f"SELECT {names} FROM t WHERE {partition_predicate(part.model, part.layer)} AND ({where})"
        with self._lock:  # the provider takes the table's snapshot as it is now
            delta = self._current(part.table)
            if delta is None:
                return pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
            builder = QueryBuilder().register("t", delta)
        return pl.DataFrame(builder.execute(sql).read_all())

    def cached(self, key: Hashable, build: Callable[[], T]) -> T:
        """The value cached under ``key`` (which must name the versions it depends on), else ``build()``, kept
        in a least-recently-used cache of ``cache_size`` entries. Built outside the lock: two threads may build
        the same value once each, never block each other's reads."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = build()
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return value

    def cache_keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._cache)
