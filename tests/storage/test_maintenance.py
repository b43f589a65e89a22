"""Lake maintenance: a partition re-written 20 times goes back to one partition's files, the other partition and
every read unchanged; short retentions only when allowed; compaction merges a partition's files and survives a
writer's conflicting commit; missing tables are skipped; the same on an S3-compatible lake (moto)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from sae_assets.storage import maintenance
from sae_assets.storage.delta import table_uri, write_partition, write_partition_batches
from sae_assets.storage.maintenance import RetentionError, maintain_lake, maintain_table

SCHEMA = pa.schema([("feature", pa.int32()), ("value", pa.float64())])


def _frame(rng: np.random.Generator, n: int = 50) -> pl.DataFrame:
    return pl.DataFrame({"feature": pl.Series(range(n), dtype=pl.Int32), "value": rng.normal(size=n)})


def _data_files(table_dir: Path) -> dict[str, int]:
    """Every data file under the table's directory (``_delta_log`` excluded): relative path -> bytes."""
    return {str(p.relative_to(table_dir)): p.stat().st_size for p in table_dir.rglob("*")
            if p.is_file() and "_delta_log" not in p.parts}


def _read(uri: str, storage_options: dict[str, str] | None = None) -> pl.DataFrame:
    return pl.read_delta(uri, storage_options=storage_options).sort("model", "layer", "feature")


def _rewritten_table(lake_root: str, rewrites: int = 20) -> tuple[str, Path]:
    rng = np.random.default_rng(0)
    uri = table_uri(lake_root, "feature_stats")
    for _ in range(rewrites):
        write_partition(_frame(rng), uri, "m@a", 1)
    write_partition(_frame(rng), uri, "m@b", 2)
    return uri, Path(uri)


def test_retention_zero_leaves_one_partitions_worth_of_files_and_the_same_reads(lake_root: str) -> None:
    uri, table_dir = _rewritten_table(lake_root)
    files = _data_files(table_dir)
    other = {p: size for p, size in files.items() if p.startswith("model=m%40b/")}
    assert len(files) == 21 and len(other) == 1
    before = _read(uri)

    [result] = maintain_lake(lake_root, retention_hours=0, allow_short_retention=True)

    after_files = _data_files(table_dir)
    assert len(after_files) == 2  # one file per partition: the current version's
    assert {p: size for p, size in after_files.items() if p.startswith("model=m%40b/")} == other  # untouched
    assert _read(uri).equals(before)
    assert result.table == "feature_stats" and result.files_vacuumed == 19 and result.files_compacted == 0
    assert (result.before.disk_files, result.after.disk_files) == (21, 2)
    assert (result.before.active_files, result.after.active_files) == (2, 2)
    assert result.after.disk_bytes == sum(after_files.values()) == result.after.active_bytes
    assert result.before.disk_bytes == sum(files.values())
    assert result.after.version > result.before.version == 20
    assert (table_dir / "_delta_log" / "_last_checkpoint").exists()
    assert result.conflicts == () and result.seconds > 0


def test_a_short_retention_needs_the_flag_and_the_default_keeps_recent_files(lake_root: str) -> None:
    uri, table_dir = _rewritten_table(lake_root, rewrites=3)
    files = _data_files(table_dir)
    for hours in (0, 24, 167):
        with pytest.raises(RetentionError, match="allow_short_retention=True"):
            maintain_lake(lake_root, retention_hours=hours)
        with pytest.raises(RetentionError, match="below Delta's minimum of 168 h"):
            maintain_table(uri, retention_hours=hours)
    with pytest.raises(ValueError, match=">= 0"):
        maintain_table(uri, retention_hours=-1, allow_short_retention=True)
    assert _data_files(table_dir) == files and DeltaTable(uri).version() == 3  # refused before touching it

    [result] = maintain_lake(lake_root)  # 168 h: files removed minutes ago stay (readers of old versions)
    assert result.files_vacuumed == 0 and _data_files(table_dir) == files
    assert DeltaTable(uri, version=0).to_pyarrow_table().num_rows == 50  # time travel still reads


def test_the_table_minimum_comes_from_its_configuration(lake_root: str) -> None:
    uri, _ = _rewritten_table(lake_root, rewrites=1)
    table = DeltaTable(uri)
    assert maintenance.minimum_retention_hours(table) == 168
    table.alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 2 days"})
    assert maintenance.minimum_retention_hours(DeltaTable(uri)) == 48
    assert maintain_table(uri, retention_hours=48) is not None  # allowed by this table without the flag
    with pytest.raises(RetentionError, match="minimum of 48 h"):
        maintain_table(uri, retention_hours=47)


def _batches(rng: np.random.Generator):
    frames = [pa.record_batch({"feature": pa.array(range(i * 10, i * 10 + 10), pa.int32()),
                               "value": rng.normal(size=10)}, schema=SCHEMA) for i in range(4)]
    return lambda: frames


def test_compaction_merges_a_partitions_files_and_retries_a_conflicting_commit(lake_root: str) -> None:
    rng = np.random.default_rng(1)
    uri = table_uri(lake_root, "cooccurrence")
    write_partition_batches(_batches(rng), SCHEMA, uri, "m@a", 1, file_bytes=1)  # a file per batch
    stale = DeltaTable(uri)  # compaction plans on this version...
    write_partition_batches(_batches(rng), SCHEMA, uri, "m@a", 1, file_bytes=1)  # ...a writer replaces it
    latest = _read(uri)
    assert DeltaTable(uri).get_add_actions().num_rows == 4

    metrics, retries = maintenance.compact_partition(stale, [("model", "=", "m@a"), ("layer", "=", "1")])
    assert retries >= 1 and metrics is not None and metrics["numFilesRemoved"] == 4  # the writer's files
    assert _read(uri).equals(latest)  # the writer's rows, not the stale ones

    result = maintain_table(uri, retention_hours=0, allow_short_retention=True, full_vacuum=True)
    assert result is not None and result.after.active_files == 1 and result.partitions_compacted == 0
    # Full vacuum also deletes the conflicting attempt's never-committed files: only the compacted one stays.
    assert len(_data_files(Path(uri))) == 1 and _read(uri).equals(latest)


def test_compaction_in_maintenance_counts_the_files_it_replaced(lake_root: str) -> None:
    rng = np.random.default_rng(2)
    uri = table_uri(lake_root, "cooccurrence")
    write_partition_batches(_batches(rng), SCHEMA, uri, "m@a", 1, file_bytes=1)
    write_partition(_frame(rng), uri, "m@b", 1)
    before = _read(uri)
    result = maintain_table(uri, retention_hours=0, allow_short_retention=True)
    assert result is not None
    assert (result.partitions_compacted, result.files_compacted, result.files_written) == (1, 4, 1)
    assert (result.before.active_files, result.after.active_files, result.after.disk_files) == (5, 2, 2)
    assert _read(uri).equals(before)


def test_missing_tables_and_other_folders_are_skipped(lake_root: str, tmp_path: Path) -> None:
    assert maintenance.list_tables(str(tmp_path / "nowhere")) == []
    _rewritten_table(lake_root, rewrites=2)
    os.makedirs(Path(lake_root) / "exports" / "feature_map")  # a files_root folder, not a table
    assert maintenance.list_tables(lake_root) == ["feature_stats"]
    assert maintain_table(table_uri(lake_root, "missing")) is None
    results = maintain_lake(lake_root, tables=["missing", "feature_stats"], retention_hours=0,
                            allow_short_retention=True)
    assert [r.table for r in results] == ["feature_stats"] and results[0].files_vacuumed == 1


def test_maintenance_on_an_s3_lake(s3_options: dict[str, str]) -> None:
    rng = np.random.default_rng(3)
    root = "s3://lake/sae"
    uri = table_uri(root, "feature_stats")
    for _ in range(4):
        write_partition(_frame(rng), uri, "m@a", 1, storage_options=s3_options)
    write_partition(_frame(rng), uri, "m@b", 1, storage_options=s3_options)
    before = _read(uri, s3_options)
    assert maintenance.list_tables(root, s3_options) == ["feature_stats"]
    [result] = maintain_lake(root, retention_hours=0, allow_short_retention=True, storage_options=s3_options)
    assert (result.before.disk_files, result.after.disk_files, result.files_vacuumed) == (5, 2, 3)
    assert result.after.log_files is not None and result.after.log_files > result.before.log_files  # + checkpoint
    assert _read(uri, s3_options).equals(before)
