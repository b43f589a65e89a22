"""Partitions written in record-batch blocks (one commit) and read back block by block."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from sae_assets.storage.delta import (
    iter_partition_batches,
    read_partition,
    table_uri,
    write_partition,
    write_partition_batches,
)

SCHEMA = pa.schema([("feature", pa.int32()), ("partners", pa.list_(pa.int32()))])


def _batches(n_batches: int, rows: int, fail_after: int | None = None) -> Iterator[pa.RecordBatch]:
    for b in range(n_batches):
        if fail_after is not None and b == fail_after:
            raise MemoryError("killed mid-write")
        features = np.arange(b * rows, (b + 1) * rows, dtype=np.int32)
        partners = pa.array([list(range(int(f) % 5)) for f in features], pa.list_(pa.int32()))
        yield pa.RecordBatch.from_arrays([pa.array(features), partners], schema=SCHEMA)


def test_blocks_replace_one_partition_in_one_commit(lake_root: str) -> None:
    uri = table_uri(lake_root, "hist")
    write_partition_batches(lambda: _batches(3, 10), SCHEMA, uri, "m@a", 4)
    other = write_partition_batches(lambda: _batches(2, 10), SCHEMA, uri, "m@b", 4)
    before = DeltaTable(uri).version()
    # Several files (a tiny file size), one commit; the smaller replacement drops the old rows.
    result = write_partition_batches(lambda: _batches(2, 7), SCHEMA, uri, "m@a", 4, file_bytes=1)
    assert result.version == before + 1 == DeltaTable(uri).version() and result.num_rows == 14
    a = read_partition(uri, "m@a", 4).sort("feature")
    assert a["feature"].to_list() == list(range(14))
    assert a["partners"].to_list() == [list(range(f % 5)) for f in range(14)]
    assert len([f for f in DeltaTable(uri).file_uris() if "model=m@a" in f]) == 2
    assert read_partition(uri, "m@b", 4).height == 20 and other.num_rows == 20
    blocks = list(iter_partition_batches(uri, "m@a", 4, batch_rows=4))
    assert max(b.num_rows for b in blocks) <= 4 and sum(b.num_rows for b in blocks) == 14


def test_a_write_that_dies_midway_leaves_the_previous_partition(lake_root: str) -> None:
    uri = table_uri(lake_root, "hist")
    write_partition_batches(lambda: _batches(3, 10), SCHEMA, uri, "m@a", 4)
    version = DeltaTable(uri).version()
    with pytest.raises(MemoryError):
        write_partition_batches(lambda: _batches(3, 10, fail_after=2), SCHEMA, uri, "m@a", 4, file_bytes=1)
    assert DeltaTable(uri).version() == version  # nothing committed: readers see the old partition whole
    assert read_partition(uri, "m@a", 4)["feature"].sort().to_list() == list(range(30))


def test_a_table_with_other_columns_is_refused_with_what_to_do(lake_root: str) -> None:
    uri = table_uri(lake_root, "hist")
    write_partition(pl.DataFrame({"feature_i": [0], "feature_j": [1], "count": [3]}), uri, "m@a", 4)
    with pytest.raises(ValueError, match="another version of the platform.*re-materialize"):
        write_partition_batches(lambda: _batches(1, 3), SCHEMA, uri, "m@a", 4)
    assert read_partition(uri, "m@a", 4)["count"].to_list() == [3]


def test_a_write_that_adds_columns_evolves_the_table_and_keeps_other_partitions(lake_root: str) -> None:
    uri = table_uri(lake_root, "stats")
    write_partition(pl.DataFrame({"feature": [0, 1]}), uri, "m@a", 2)  # a lake from before the column existed
    write_partition(pl.DataFrame({"feature": [0], "scan_id": ["s1"]}), uri, "m@a", 4)
    wider = pa.schema([pa.field("feature", pa.int64()), pa.field("scan_id", pa.string()),
                       pa.field("extra", pa.list_(pa.float32()))])
    write_partition_batches(lambda: [pa.record_batch([[5], ["s2"], [[1.0]]], schema=wider)], wider, uri, "m@a", 6)
    assert [f.name for f in DeltaTable(uri).schema().fields] == ["feature", "model", "layer", "scan_id", "extra"]
    assert read_partition(uri, "m@a", 2)["scan_id"].to_list() == [None, None]  # untouched, the new columns null
    assert read_partition(uri, "m@a", 4)["scan_id"].to_list() == ["s1"]
    assert read_partition(uri, "m@a", 6).select("scan_id", "extra").rows() == [("s2", [1.0])]
