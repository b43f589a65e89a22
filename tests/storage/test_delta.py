from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import polars as pl
import pytest
from deltalake import DeltaTable

from sae_assets.storage.delta import read_partition, scan_partition, table_uri, write_partition


def _frame(n: int, value: float) -> pl.DataFrame:
    return pl.DataFrame({"feature": list(range(n)), "value": [value] * n})


def test_rewrite_is_idempotent_and_leaves_other_partitions(lake_root: str) -> None:
    uri = table_uri(lake_root, "t")
    write_partition(_frame(3, 1.0), uri, "m@a", 2)
    write_partition(_frame(4, 2.0), uri, "m@a", 4)
    write_partition(_frame(5, 3.0), uri, "m@b", 2)
    first = read_partition(uri, "m@a", 2)
    again = write_partition(_frame(3, 1.0), uri, "m@a", 2)
    assert again.num_rows == 3
    assert read_partition(uri, "m@a", 2).sort("feature").equals(first.sort("feature"))
    write_partition(_frame(2, 9.0), uri, "m@a", 2)  # a smaller replacement drops the old rows
    everything = pl.read_delta(uri)
    counts = dict(everything.group_by("model", "layer").len().select(
        pl.concat_str("model", "layer", separator="/"), "len").iter_rows())
    assert counts == {"m@a/2": 2, "m@a/4": 4, "m@b/2": 5}
    assert read_partition(uri, "m@a", 2)["value"].to_list() == [9.0, 9.0]


def test_untyped_null_columns_are_refused(lake_root: str) -> None:
    uri = table_uri(lake_root, "t")
    with pytest.raises(ValueError, match=r"Columns \['error'\] have no dtype"):
        write_partition(pl.DataFrame({"feature": [1], "error": [None]}), uri, "m@a", 1)
    write_partition(pl.DataFrame({"feature": [1], "error": [None]}, schema={"feature": pl.Int64, "error": pl.String}),
                    uri, "m@a", 1)
    write_partition(pl.DataFrame({"feature": [2], "error": ["boom"]}), uri, "m@a", 2)
    assert pl.read_delta(uri).sort("feature")["error"].to_list() == [None, "boom"]


def test_partition_columns_are_strings(lake_root: str) -> None:
    uri = table_uri(lake_root, "t")
    write_partition(_frame(1, 0.0), uri, "m@a", 7)
    schema = pl.read_delta(uri).schema
    assert schema["model"] == pl.String and schema["layer"] == pl.String
    assert DeltaTable(uri).metadata().partition_columns == ["model", "layer"]


def test_read_whole_model_lazily(lake_root: str) -> None:
    uri = table_uri(lake_root, "t")
    for layer in (0, 1, 2):
        write_partition(_frame(2, float(layer)), uri, "m@a", layer)
    write_partition(_frame(2, 5.0), uri, "other@x", 0)
    lazy = scan_partition(uri, "m@a")
    assert isinstance(lazy, pl.LazyFrame)
    assert sorted(lazy.collect()["layer"].unique().to_list()) == ["0", "1", "2"]


def test_float32_vectors_round_trip_bit_exactly(lake_root: str) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((16, 33)).astype(np.float32)
    vectors[0, :6] = [np.float32(1e-45), -0.0, np.inf, -np.inf, np.float32(3.4028235e38), np.nan]
    frame = pl.DataFrame({
        "feature": list(range(16)),
        "vec": pl.Series(vectors.reshape(-1), dtype=pl.Float32).reshape((16, 33)).cast(pl.List(pl.Float32)),
    })
    uri = table_uri(lake_root, "vectors")
    write_partition(frame, uri, "m@a", 3)
    back = read_partition(uri, "m@a", 3).sort("feature")
    assert back.schema["vec"] == pl.List(pl.Float32)
    restored = back["vec"].list.to_array(33).to_numpy()
    assert restored.dtype == np.float32
    assert restored.view(np.uint32).tobytes() == vectors.view(np.uint32).tobytes()


def _write_one(args: tuple[str, int]) -> int:
    uri, i = args
    write_partition(_frame(100 + i, float(i)), uri, f"model{i % 2}@x", i)
    return i


@pytest.mark.parametrize("start_empty", [True, False])
def test_eight_concurrent_writers_lose_nothing(lake_root: str, start_empty: bool) -> None:
    uri = table_uri(lake_root, "concurrent")
    if not start_empty:
        write_partition(_frame(1, -1.0), uri, "keep@x", 40)
    # ProcessPoolExecutor, not Pool: its exit lets workers finish and exit (Pool.__exit__ terminates them, and
    # once hung the CI run in that terminate), and a worker that dies fails the test instead of hanging it.
    with ProcessPoolExecutor(8, mp_context=mp.get_context("spawn")) as pool:
        assert sorted(pool.map(_write_one, [(uri, i) for i in range(8)], timeout=300)) == list(range(8))
    table = pl.read_delta(uri)
    for i in range(8):
        part = table.filter((pl.col("model") == f"model{i % 2}@x") & (pl.col("layer") == str(i)))
        assert part.height == 100 + i
        assert part["value"].unique().to_list() == [float(i)]
    assert table.height == sum(100 + i for i in range(8)) + (0 if start_empty else 1)


def test_a_model_level_write_replaces_every_layer_of_that_model_only(lake_root: str) -> None:
    uri = table_uri(lake_root, "report")
    write_partition(pl.DataFrame({"layer": ["2", "4"], "v": [1.0, 2.0]}), uri, "m@a", None)
    write_partition(pl.DataFrame({"layer": ["2"], "v": [7.0]}), uri, "m@b", None)
    write_partition(pl.DataFrame({"layer": [4, 6], "v": [3.0, 4.0]}), uri, "m@a", None)  # layer 2 is gone now
    rows = pl.read_delta(uri).sort("model", "layer").select("model", "layer", "v").rows()
    assert rows == [("m@a", "4", 3.0), ("m@a", "6", 4.0), ("m@b", "2", 7.0)]
    with pytest.raises(ValueError, match="needs a 'layer' column"):
        write_partition(pl.DataFrame({"v": [1.0]}), uri, "m@a", None)
