"""Delta tables partitioned by model × layer: write one partition, read one partition or one model.

Every asset's table lives at ``<lake root>/<asset name>`` with string partition columns ``model`` and
``layer``. A write replaces exactly one partition (``mode="overwrite"`` with a predicate on both
columns), so re-runs are idempotent and other partitions are untouched. Writers of different
partitions commit concurrently; delta-rs resolves most such commits itself and the rest (including two
writers racing to create the table) are retried here with backoff.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

log = logging.getLogger(__name__)

PARTITION_COLUMNS = ("model", "layer")
MAX_COMMIT_ATTEMPTS = 12


@dataclass(frozen=True)
class WriteResult:
    uri: str
    version: int
    """Table version this write committed (or the latest one after it, under concurrent writers)."""
    num_rows: int


def table_uri(root: str, asset_name: str) -> str:
    return f"{root.rstrip('/')}/{asset_name}"


def partition_predicate(model: str, layer: int | str | None = None) -> str:
    def quote(v: str) -> str:
        return "'" + v.replace("'", "''") + "'"

    parts = [f"model = {quote(model)}"]
    if layer is not None:
        parts.append(f"layer = {quote(str(layer))}")
    return " AND ".join(parts)


def _with_partition_columns(df: pl.DataFrame, model: str, layer: int | str | None) -> pa.Table:
    untyped = [name for name, dtype in df.schema.items() if dtype == pl.Null]
    if untyped:
        # An all-null column has no type; Delta would record it as null and reject the next partition
        # that holds values. Writers must give such columns an explicit dtype.
        raise ValueError(f"Columns {untyped} have no dtype (all null): give them an explicit schema.")
    if layer is None:  # a whole model: the rows say their layer
        if "layer" not in df.columns:
            raise ValueError("Writing every layer of a model needs a 'layer' column.")
        df = df.drop("model", strict=False).with_columns(pl.lit(model, dtype=pl.String).alias("model"),
                                                         pl.col("layer").cast(pl.String))
    else:
        df = df.drop([c for c in PARTITION_COLUMNS if c in df.columns])
        df = df.with_columns(pl.lit(model, dtype=pl.String).alias("model"),
                             pl.lit(str(layer), dtype=pl.String).alias("layer"))
    return df.to_arrow()


def _is_retryable(err: Exception) -> bool:
    if isinstance(err, CommitFailedError):
        return True
    text = str(err).lower()
    # Two writers creating the table at once: the loser sees the first commit as a conflict.
    return any(s in text for s in ("already exists", "conflict", "version 0", "concurrent"))


def write_partition(
    df: pl.DataFrame,
    uri: str,
    model: str,
    layer: int | str | None,
    storage_options: dict[str, str] | None = None,
) -> WriteResult:
    """Replace partition (model, layer) of the Delta table at ``uri`` with ``df``; with ``layer=None``, replace
    every layer of ``model`` (model-level assets), taking each row's layer from ``df``'s ``layer`` column."""
    data = _with_partition_columns(df, model, layer)
    predicate = partition_predicate(model, layer)
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        # Writing through a DeltaTable object leaves it at the version this commit made (other writers may
        # commit meanwhile, so re-reading the table afterwards could name theirs).
        table = open_table(uri, storage_options)
        try:
            write_deltalake(
                table if table is not None else uri,
                data,
                mode="overwrite",
                predicate=predicate,
                partition_by=list(PARTITION_COLUMNS),
                storage_options=storage_options,
            )
            break
        except (DeltaError, OSError) as err:
            if attempt == MAX_COMMIT_ATTEMPTS or not _is_retryable(err):
                raise
            delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
            log.info("Delta commit to %s conflicted (%s); retry %d in %.2fs", uri, err, attempt, delay)
            time.sleep(delay)
    version = (table if table is not None else DeltaTable(uri, storage_options=storage_options)).version()
    return WriteResult(uri=uri, version=version, num_rows=data.num_rows)


def open_table(uri: str, storage_options: dict[str, str] | None = None) -> DeltaTable | None:
    """The Delta table at ``uri``, or None when there is none yet."""
    try:
        return DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        return None


def table_version(uri: str, storage_options: dict[str, str] | None = None) -> int | None:
    table = open_table(uri, storage_options)
    return None if table is None else table.version()


def scan_partition(
    uri: str,
    model: str,
    layer: int | str | None = None,
    storage_options: dict[str, str] | None = None,
) -> pl.LazyFrame:
    """Lazily read one partition (or, with ``layer=None``, every layer of one model)."""
    lf = pl.scan_delta(uri, storage_options=storage_options).filter(pl.col("model") == model)
    if layer is not None:
        lf = lf.filter(pl.col("layer") == str(layer))
    return lf


def read_partition(
    uri: str,
    model: str,
    layer: int | str | None = None,
    storage_options: dict[str, str] | None = None,
) -> pl.DataFrame:
    return scan_partition(uri, model, layer, storage_options).collect()
