"""The lake on an S3-compatible server (moto's, on 127.0.0.1): concurrent partition writers lose nothing, and an
asset runs against it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import torch

from sae_assets.core.sae.decoder import decoder_frame
from sae_assets.defs.assets.feature_map import feature_map
from sae_assets.defs.partitions import partition_key, register_models
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource


def test_concurrent_partition_writers_lose_nothing(s3_options: dict[str, str]) -> None:
    lake = LakeResource(root="s3://lake/sae", storage_options=s3_options)

    def write(job: tuple[str, int]) -> int:
        model, layer = job
        frame = pl.DataFrame({"feature": pl.Series(range(50), dtype=pl.Int32), "value": [float(layer)] * 50})
        return lake.write_partition("stats", frame, model, layer).version

    lake.write_partition("stats", pl.DataFrame({"feature": pl.Series([0], dtype=pl.Int32), "value": [-1.0]}),
                         "a@x", 0)  # the table exists; then 16 writers race on it
    jobs = [(model, layer) for model in ("a@x", "b@y") for layer in range(8)]
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(write, jobs))
    assert sorted(versions) == list(range(1, 17))  # each writer reports its own commit
    table = lake.scan_partition("stats", "a@x").collect().vstack(lake.scan_partition("stats", "b@y").collect())
    counts = table.group_by("model", "layer").agg(pl.len(), pl.col("value").n_unique().alias("values"))
    assert counts.height == 16 and set(counts["len"]) == {50} and set(counts["values"]) == {1}
    assert table.filter((pl.col("model") == "a@x") & (pl.col("layer") == "0"))["value"].unique().to_list() == [0.0]


def test_an_asset_materializes_against_the_s3_lake(s3_options: dict[str, str], test_catalog: Path,
                                                  tmp_path: Path) -> None:
    lake = LakeResource(root="s3://lake/sae", storage_options=s3_options, files_root=str(tmp_path / "files"))
    rng = np.random.default_rng(0)
    lake.write_partition("sae_decoder", decoder_frame(torch.from_numpy(rng.normal(size=(40, 8)).astype(np.float32))),
                         "smollm2-135m@test-res", 1)
    with dg.instance_for_test() as instance:
        register_models(instance, ["smollm2-135m@test-res"])
        result = dg.materialize([feature_map], partition_key=partition_key("smollm2-135m@test-res", 1),
                                instance=instance, resources={"lake": lake, "device": DeviceResource(device="cpu")},
                                run_config={"ops": {"feature_map": {"config": {"n_neighbors": 5, "k_edges": 5}}}})
    assert result.success
    assert lake.scan_partition("feature_map", "smollm2-135m@test-res", 1).collect().height == 40
    assert lake.table_uri("feature_map").startswith("s3://lake/sae")
    assert (tmp_path / "files" / "exports" / "feature_map" / "smollm2-135m@test-res" / "layer-1.json").exists()


def test_block_writes_race_and_read_back_on_s3(s3_options: dict[str, str]) -> None:
    """Co-occurrence histograms written in blocks (parquet files through the object store, one commit each) by
    racing writers of different partitions, then read back block by block."""
    from sae_assets.core.scan.cooccurrence import COOCCURRENCE_SCHEMA, CooccurrenceCounter, dense_counts

    lake = LakeResource(root="s3://lake/sae", storage_options=s3_options)
    counters = {}
    for layer in range(4):
        counter = CooccurrenceCounter(40, torch.device("cpu"), block=16)
        counter.add(torch.rand((9, 40), generator=torch.Generator().manual_seed(layer)) < 0.3)
        counters[layer] = counter

    def write(layer: int) -> int:
        return lake.write_partition_batches("cooccurrence", counters[layer].record_batches, COOCCURRENCE_SCHEMA,
                                            "a@x", layer).num_rows

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(write, range(4))) == [40] * 4
    for layer, counter in counters.items():
        blocks = list(lake.iter_partition("cooccurrence", "a@x", layer, batch_rows=16))
        assert len(blocks) >= 3 and torch.equal(dense_counts(iter(blocks), 40), counter.counts())
