"""SFAL's per-layer summary on a hand-made score table."""

from __future__ import annotations

import polars as pl
import pytest

from sae_assets.core.alignment.report import layer_summary


def test_layers_in_numeric_order_with_means_medians_and_counts() -> None:
    scores = pl.DataFrame({
        "layer": ["10", "10", "2", "2", "2"], "embedding_model": ["m"] * 5,
        "ndcg": [0.5, 0.7, 0.1, 0.2, 0.6], "has_explanation": [True, False, True, True, True]})
    out = layer_summary(scores)
    assert out["layer"].to_list() == ["2", "10"]  # by layer number, not as strings
    assert out["mean_ndcg"].to_list() == pytest.approx([0.3, 0.6])
    assert out["median_ndcg"].to_list() == [0.2, 0.6]
    assert out["n_features"].to_list() == [3, 2] and out["n_explained"].to_list() == [3, 1]
