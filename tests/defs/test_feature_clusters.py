"""feature_clusters on lake tables shaped like the scan's, with known cluster structure."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from deltalake import DeltaTable
from sklearn.metrics import adjusted_rand_score

from sae_assets.defs.assets.feature_clusters import feature_clusters
from sae_assets.defs.partitions import partition_key, register_models
from sae_assets.resources.lake import LakeResource
from tests.defs.helpers import failure_text

MODEL = "smollm2-135m@test-res"
N, DIM = 75, 24


def _write_scan_tables(lake: LakeResource, layer: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], N // 3)
    centers = rng.normal(size=(3, DIM)) * 4
    profiles = np.abs(centers[truth] + rng.normal(scale=0.3, size=(N, DIM))).astype(np.float32)
    density = np.full(N, 0.01)
    density[[0, 1]] = 0.0  # dead: never kept
    density[2] = 0.5  # too dense
    stats = pl.DataFrame({"feature": pl.Series(range(N), dtype=pl.Int32), "density": density,
                          "activation_entropy": pl.Series([1.0] * N, dtype=pl.Float32),
                          "max_activation": pl.Series(rng.uniform(1, 5, N), dtype=pl.Float32)})
    lake.write_partition("feature_stats", stats, MODEL, layer)
    lake.write_partition("feature_profiles", pl.DataFrame({
        "feature": pl.Series(range(N), dtype=pl.Int32),
        "profile": pl.Series(list(profiles), dtype=pl.List(pl.Float32)).cast(pl.List(pl.Float32))}), MODEL, layer)
    lake.write_partition("sae_decoder", pl.DataFrame({
        "feature": pl.Series(range(N), dtype=pl.Int32),
        "decoder": pl.Series(list(rng.normal(size=(N, 8)).astype(np.float32)),
                             dtype=pl.List(pl.Float32)).cast(pl.List(pl.Float32))}), MODEL, layer)
    word = {0: " Paris", 1: " 1999", 2: " def"}
    lake.write_partition("activation_examples", pl.DataFrame({
        "feature": pl.Series(range(N), dtype=pl.Int32), "kind": ["top"] * N,
        "tokens": [["a", word[t], "b"] for t in truth], "token_activations": [[0.0, 2.0, 0.0]] * N,
        "token_position": [6] * N, "window_start": [5] * N}), MODEL, layer)
    return truth


def _run(instance, lake, layer, **config):
    return dg.materialize([feature_clusters], partition_key=partition_key(MODEL, layer), instance=instance,
                          resources={"lake": lake}, raise_on_error=False,
                          run_config={"ops": {"feature_clusters": {"config": config}}})


def test_clusters_targets_and_bad_filters(test_catalog: Path, lake_root: str) -> None:
    lake = LakeResource(root=lake_root)
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        assert (f"feature_clusters {MODEL} layer 1: no feature_stats rows for partition 1|{MODEL} (there is no "
                "feature_stats table); materialize activation_scan first.") in failure_text(_run(instance, lake, 1))
        truth = _write_scan_tables(lake, 1)
        result = _run(instance, lake, 1, method="dbscan", eps=1.0, min_samples=4, n_neighbors=10,
                      features_per_cluster=2)
        assert result.success
        table = pl.read_delta(f"{lake_root}/feature_clusters").sort("feature")
        assert table.height == N and table["kept"].to_list()[:3] == [False, False, False]
        kept = table.filter(pl.col("kept"))
        assert kept["x"].null_count() == 0 and table["x"].null_count() == 3
        assert adjusted_rand_score(truth[3:], kept["cluster"].to_numpy()) > 0.95
        targets = table.filter(pl.col("selected"))
        assert targets.height == 6 and targets["cluster"].n_unique() == 3
        meta = result.asset_materializations_for_node("feature_clusters")[0].metadata
        assert meta["n_clusters"].value == 3 and meta["n_kept"].value == N - 3
        assert sorted(meta["targets"].value) == targets["feature"].to_list()
        assert "Paris" in meta["clusters"].value and "data:image/png;base64" in meta["scatter"].value
        version = DeltaTable(f"{lake_root}/feature_clusters").version()

        assert _run(instance, lake, 1, representation="decoder", method="hdbscan").success

        bad = _run(instance, lake, 1, entropy_threshold_low=5.0)
        text = failure_text(bad)
        assert "no feature passes" in text and "activation_entropy is in [1, 1]" in text
        assert DeltaTable(f"{lake_root}/feature_clusters").version() == version + 1  # the failure wrote nothing
        assert "lower bound 0.1 is above upper bound 0.01" in failure_text(
            _run(instance, lake, 1, sparsity_min=0.1, sparsity_max=0.01))


def test_a_layer_without_an_sae_fails_at_once(test_catalog: Path, lake_root: str) -> None:
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        text = failure_text(_run(instance, LakeResource(root=lake_root), 2))
        assert "layer 2" in text and "1, 3" in text
