"""The clusters -> optimized prompts chain on a real partition of the embedded model (tiny budgets)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from deltalake import DeltaTable

from sae_assets.defs.assets.activation_scan import activation_scan
from sae_assets.defs.assets.feature_clusters import feature_clusters
from sae_assets.defs.assets.feature_labels import feature_labels
from sae_assets.defs.assets.optimized_prompts import optimized_prompts
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.partitions import register_models
from tests.defs.helpers import failure_text, materialize

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m@test-res"
CLUSTERS = {"entropy_threshold_low": 0.0, "sparsity_min": None, "sparsity_max": 1.0, "n_neighbors": 5,
            "method": "dbscan", "eps": 5.0, "min_samples": 2, "features_per_cluster": 1}
PROMPTS = {"length": 4, "max_steps": 3, "top_k": 8, "batch_size": 8, "continuous_steps": 4, "max_features": 2}


def test_targets_from_clusters_get_optimized_prompts(test_catalog: Path, lake_root: str, smollm2) -> None:
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        chain = (trained_sae, sae_decoder, activation_scan, feature_clusters, optimized_prompts)
        result = materialize(instance, lake_root, MODEL, 1, assets=chain, extra_ops={
            "feature_clusters": {"config": CLUSTERS}, "optimized_prompts": {"config": PROMPTS}})
        assert result.success
        targets = pl.read_delta(f"{lake_root}/feature_clusters").filter(pl.col("selected"))["feature"].sort()
        prompts = pl.read_delta(f"{lake_root}/optimized_prompts").sort("feature", "method")
        assert prompts["feature"].unique().to_list() == targets.head(2).to_list()
        assert prompts["method"].to_list() == ["continuous", "discrete"] * 2
        assert set(prompts["token_ids"].list.len()) == {4} and set(prompts["position_activations"].list.len()) == {4}
        stats = pl.read_delta(f"{lake_root}/feature_stats").select("feature", "max_activation")
        joined = prompts.join(stats, on="feature")
        np.testing.assert_allclose(joined["dataset_max_activation"], joined["max_activation"], rtol=1e-6)
        np.testing.assert_allclose(joined["ratio"], joined["activation"] / joined["max_activation"], rtol=1e-6)
        discrete = prompts.filter(pl.col("method") == "discrete")
        assert all(t == sorted(t) for t in discrete["trajectory"].to_list())  # the incumbent never gets worse
        assert prompts["cross_entropy"].is_finite().all() and (prompts["text"].str.len_chars() > 0).all()
        meta = result.asset_materializations_for_node("optimized_prompts")[0].metadata
        assert set(meta["by_method"].value) == {"discrete", "continuous"}
        top = pl.read_delta(f"{lake_root}/activation_examples").filter(
            (pl.col("kind") == "top") & (pl.col("rank") == 0) & pl.col("feature").is_in(targets.head(2).to_list()))
        long_enough = top.filter(pl.col("token_position") - pl.col("window_start") - 3
                                 >= (pl.col("window_start") == 0).cast(pl.Int64))
        assert meta["started_from_top_example"].value == long_enough.height > 0  # the rest start at random
        assert "data:image/png;base64" in meta["heatmaps"].value and "data:image/png" in meta["trajectories"].value

        labels = materialize(instance, lake_root, MODEL, 1, assets=(feature_labels,), labels={
            "feature_indices": prompts["feature"].unique().to_list(), "use_llm": False,
            "use_optimized_prompts": True})
        shown = labels.asset_materializations_for_node("feature_labels")[0].metadata["optimized_prompts_shown"]
        assert shown.value == prompts.filter(pl.col("position_activations").list.max() > 0).height

        version = DeltaTable(f"{lake_root}/optimized_prompts").version()
        bad = materialize(instance, lake_root, MODEL, 1, assets=(optimized_prompts,), extra_ops={
            "optimized_prompts": {"config": {**PROMPTS, "feature_indices": [3, 9999]}}})
        assert "9999" in failure_text(bad) and "256" in failure_text(bad)
        short = materialize(instance, lake_root, MODEL, 1, assets=(optimized_prompts,), extra_ops={
            "optimized_prompts": {"config": {**PROMPTS, "length": 0}}})
        assert "length must be >= 1" in failure_text(short)
        assert DeltaTable(f"{lake_root}/optimized_prompts").version() == version
