"""Delta tables partitioned by model × layer: write one partition, read one partition or one model.

Every asset's table lives at ``<lake root>/<asset name>`` with string partition columns ``model`` and
``layer``. A write replaces exactly one partition (``mode="overwrite"`` with a predicate on both
columns), so re-runs are idempotent and other partitions are untouched. Writers of different
partitions commit concurrently; delta-rs resolves most such commits itself and the rest (including two
writers racing to create the table) are retried here with backoff.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler
from deltalake.schema import Field
from deltalake.transaction import AddAction, RemoveAction

from sae_assets import settings

log = logging.getLogger(__name__)

PARTITION_COLUMNS = ("model", "layer")
MAX_COMMIT_ATTEMPTS = 12
FILE_BYTES = 128 * 1024 * 1024
"""Uncompressed bytes per parquet file of a block-written partition."""


@dataclass(frozen=True)
class WriteResult:
    uri: str
    version: int
    """Table version this write committed (or the latest one after it, under concurrent writers)."""
    num_rows: int


def is_local_uri(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def root_uri(root: str) -> str:
    """A lake root as tables are addressed under it: a local one as an absolute path (``~`` expanded,
    ``file://`` dropped), a URI as given without a trailing slash."""
    if is_local_uri(root):
        return str(Path(root.removeprefix("file://")).expanduser().resolve())
    return root.rstrip("/")


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
        if table is not None:
            table = with_columns_of(table, data.schema, uri, storage_options)
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
            _backoff_or_raise(err, attempt, uri)
    version = (table if table is not None else DeltaTable(uri, storage_options=storage_options)).version()
    return WriteResult(uri=uri, version=version, num_rows=data.num_rows)


def _backoff_or_raise(err: Exception, attempt: int, uri: str) -> None:
    if attempt == MAX_COMMIT_ATTEMPTS or not _is_retryable(err):
        raise err
    delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
    log.info("Delta commit to %s conflicted (%s); retry %d in %.2fs", uri, err, attempt, delay)
    time.sleep(delay)


def _table_for(uri: str, schema: pa.Schema, storage_options: dict[str, str] | None) -> DeltaTable:
    """The table at ``uri``, created (partitioned by model, layer) when there is none; refuses a table whose
    columns differ from ``schema``'s, saying how to move on."""
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        table = open_table(uri, storage_options)
        if table is not None:
            break
        try:  # "ignore": a creator that raced us and won is fine
            DeltaTable.create(uri, schema, mode="ignore", partition_by=list(PARTITION_COLUMNS),
                              storage_options=storage_options)
        except (DeltaError, OSError) as err:
            _backoff_or_raise(err, attempt, uri)
    else:
        raise RuntimeError(f"Could not open or create the Delta table {uri}.")
    return with_columns_of(table, schema, uri, storage_options)


def with_columns_of(table: DeltaTable, schema: pa.Schema, uri: str,
                    storage_options: dict[str, str] | None) -> DeltaTable:
    """``table``, given the columns ``schema`` adds to it (nullable: its other partitions read them as null),
    so a platform version that adds a column writes into a lake an earlier one made. A write that lacks one of
    the table's columns is refused, saying how to move on."""
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        have = {f.name for f in table.schema().fields}
        lacking = sorted(have - set(schema.names))
        if lacking:
            raise ValueError(f"The Delta table {uri} has columns {lacking} this write lacks (a table from another "
                             "version of the platform?). Move the table aside or delete it, then re-materialize its "
                             "partitions.")
        added = [schema.field(name) for name in schema.names if name not in have]
        if not added:
            return table
        try:
            table.alter.add_columns([Field(f.name, Field.from_arrow(f).type, nullable=True) for f in added])
            log.info("Added column(s) %s to the Delta table %s", [f.name for f in added], uri)
        except (DeltaError, OSError) as err:
            _backoff_or_raise(err, attempt, uri)
        table = DeltaTable(uri, storage_options=storage_options)
    raise RuntimeError(f"Could not add columns to the Delta table {uri}.")


def table_filesystem(uri: str, storage_options: dict[str, str] | None) -> pafs.FileSystem:
    """A pyarrow filesystem rooted at the table: local, S3 (deltalake's AWS_* options mapped to pyarrow's), or
    deltalake's own storage handler for the other object stores."""
    options = storage_options or {}
    if "://" not in uri:
        return pafs.SubTreeFileSystem(uri, pafs.LocalFileSystem())
    scheme, path = uri.split("://", 1)
    if scheme in ("s3", "s3a"):
        env = settings.aws_environment()

        def get(*keys: str) -> str | None:  # the first option set, here or in the environment
            return next((v for v in (options.get(k) or env.get(k) for k in keys) if v), None)

        endpoint = get("AWS_ENDPOINT_URL", "AWS_ENDPOINT")
        http = (get("AWS_ALLOW_HTTP") or "").lower() == "true" or (endpoint or "").startswith("http://")
        s3 = pafs.S3FileSystem(
            access_key=get("AWS_ACCESS_KEY_ID"), secret_key=get("AWS_SECRET_ACCESS_KEY"),
            session_token=get("AWS_SESSION_TOKEN"), region=get("AWS_REGION", "AWS_DEFAULT_REGION"),
            endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None, scheme="http" if http else "https")
        return pafs.SubTreeFileSystem(path, s3)
    return pafs.PyFileSystem(DeltaStorageHandler(uri, options))


def write_partition_batches(
    batches: Callable[[], Iterable[pa.RecordBatch]],
    schema: pa.Schema,
    uri: str,
    model: str,
    layer: int | str,
    storage_options: dict[str, str] | None = None,
    file_bytes: int = FILE_BYTES,
) -> WriteResult:
    """Replace partition (model, layer) with the record batches ``batches()`` yields (``schema``, without the
    partition columns), holding one batch in memory at a time: batches are appended to parquet files under the
    partition's directory (a new file past ``file_bytes``), and the files are committed in one Delta
    transaction that also removes the partition's previous files. Until that commit readers see the previous
    partition whole; a crash before it leaves only unreferenced files (``vacuum`` removes them). For tables
    too large to build as one frame: a 16k-latent SAE's co-occurrence histograms, for one."""
    full = pa.schema([*schema, *(pa.field(c, pa.string()) for c in PARTITION_COLUMNS)])
    table = _table_for(uri, full, storage_options)
    fs = table_filesystem(uri, storage_options)
    values = {"model": model, "layer": str(layer)}
    # Partition values come from the commit's actions; the folder only needs to be a path no reader re-decodes.
    folder = "/".join(f"{c}={re.sub(r'[^A-Za-z0-9@._-]', '_', values[c])}" for c in PARTITION_COLUMNS)
    if "://" not in uri:
        fs.create_dir(folder, recursive=True)  # object stores have no directories to make
    actions: list[AddAction | RemoveAction] = []  # adds only: the overwrite removes the old files itself
    writer: pq.ParquetWriter | None = None
    path, rows, size = "", 0, 0

    def close() -> None:
        if writer is not None:
            writer.close()
            actions.append(AddAction(path=path, size=fs.get_file_info(path).size, partition_values=values,
                                     modification_time=int(time.time() * 1000), data_change=True,
                                     stats=json.dumps({"numRecords": rows})))

    total = 0
    for batch in batches():
        if writer is None or size >= file_bytes:
            close()
            path, rows, size = f"{folder}/part-{uuid.uuid4()}.zstd.parquet", 0, 0
            writer = pq.ParquetWriter(path, schema, filesystem=fs, compression="zstd")
        writer.write_batch(batch.select(schema.names))
        rows, size, total = rows + batch.num_rows, size + batch.nbytes, total + batch.num_rows
    close()
    filters = [(c, "=", values[c]) for c in PARTITION_COLUMNS]
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        try:
            table.create_write_transaction(actions, mode="overwrite", schema=full,
                                           partition_by=list(PARTITION_COLUMNS), partition_filters=filters)
            break
        except (DeltaError, OSError) as err:
            _backoff_or_raise(err, attempt, uri)
            table.update_incremental()
    table.update_incremental()  # the transaction does not move the object to its commit
    return WriteResult(uri=uri, version=table.version(), num_rows=total)


def iter_partition_batches(uri: str, model: str, layer: int | str, columns: list[str] | None = None,
                           batch_rows: int = 512,
                           storage_options: dict[str, str] | None = None) -> Iterator[pa.RecordBatch]:
    """One partition's rows in record batches of at most ``batch_rows``, read a file at a time (no read-ahead),
    so a table far larger than memory can be checked or densified block by block."""
    filters = [(c, "=", v) for c, v in (("model", model), ("layer", str(layer)))]
    dataset = DeltaTable(uri, storage_options=storage_options).to_pyarrow_dataset(file_pruning_predicate=filters)
    yield from dataset.to_batches(columns=columns, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1,
                                  filter=(pads.field("model") == model) & (pads.field("layer") == str(layer)))


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
