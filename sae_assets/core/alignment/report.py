"""SFAL across layers: one model's per-feature NDCG scores summarized per layer and embedding model."""

from __future__ import annotations

import polars as pl


def layer_summary(scores: pl.DataFrame) -> pl.DataFrame:
    """``alignment_scores`` rows of one model -> one row per layer × embedding model, ordered by layer."""
    return (scores.group_by("layer", "embedding_model")
            .agg(pl.col("ndcg").mean().alias("mean_ndcg"), pl.col("ndcg").median().alias("median_ndcg"),
                 pl.len().cast(pl.Int32).alias("n_features"),
                 pl.col("has_explanation").sum().cast(pl.Int32).alias("n_explained"))
            .with_columns(pl.col("layer").cast(pl.Int32).alias("layer_index"))
            .sort("layer_index", "embedding_model").drop("layer_index"))
