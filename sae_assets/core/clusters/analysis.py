"""Per-cluster analysis of clustered SAE features: target selection, summary table, top activating tokens."""

from __future__ import annotations

import numpy as np
import polars as pl

SUMMARY_SCHEMA = pl.Schema({"cluster": pl.Int32(), "size": pl.Int32(), "n_selected": pl.Int32(),
                            "mean_density": pl.Float64(), "mean_max_activation": pl.Float64(),
                            "mean_entropy": pl.Float64(), "selected_features": pl.List(pl.Int32),
                            "top_tokens": pl.String()})


def select_representatives(labels: np.ndarray, coords: np.ndarray, max_activation: np.ndarray, features: np.ndarray,
                           per_cluster: int, rule: str = "max_activation") -> np.ndarray:
    """``[n]`` bool: up to ``per_cluster`` targets per cluster of ``labels [n]`` (-1 = noise).

    ``rule`` ``max_activation``: the highest ``max_activation [n]``; ``centroid``: the closest (euclidean) to
    the mean of the cluster's ``coords [n, c]``. Ties go to the lower ``features [n]`` index. Noise points are
    never selected unless every point is noise, in which case the noise is treated as one cluster.
    """
    labels = np.asarray(labels)
    chosen = np.zeros(len(labels), dtype=bool)
    if len(labels) == 0 or per_cluster <= 0:
        return chosen
    features = np.asarray(features)
    groups = np.unique(labels[labels >= 0]) if (labels >= 0).any() else np.array([-1])
    for group in groups:
        members = np.flatnonzero(labels == group)
        if rule == "max_activation":
            key = -np.asarray(max_activation, dtype=np.float64)[members]  # NaN sorts last
        elif rule == "centroid":
            points = np.asarray(coords, dtype=np.float64)[members]
            key = ((points - points.mean(axis=0)) ** 2).sum(axis=1)
        else:
            raise ValueError(f"unknown selection rule {rule!r}")
        order = np.lexsort((features[members], key))
        chosen[members[order[:per_cluster]]] = True
    return chosen


def peak_tokens(examples: pl.DataFrame) -> pl.DataFrame:
    """``feature``, ``token``: the token at the peak of each ``top`` example of ``activation_examples``
    (the window's token at ``token_position``), whitespace-stripped; newlines and tabs shown escaped."""
    raw = pl.col("tokens").list.get(pl.col("token_position") - pl.col("window_start"), null_on_oob=True)
    stripped = raw.str.strip_chars()
    escaped = raw.str.replace_all("\n", "\\n", literal=True).str.replace_all("\t", "\\t", literal=True)
    token = pl.when(stripped != "").then(stripped).otherwise(escaped.str.strip_chars(" "))
    return (examples.filter(pl.col("kind") == "top")
            .select(pl.col("feature").cast(pl.Int32), token.alias("token"))
            .filter(pl.col("token").is_not_null() & (pl.col("token") != "")))


def cluster_top_tokens(examples: pl.DataFrame | None, assignments: pl.DataFrame, top_n: int = 5) -> pl.DataFrame:
    """``cluster``, ``top_tokens``: per cluster of ``assignments`` (``feature``, ``cluster``), its features' most
    frequent peak tokens over their top examples, as ``"tok (count), ..."`` (ties by token, at most ``top_n``)."""
    schema = pl.Schema({"cluster": pl.Int32, "top_tokens": pl.String})
    if examples is None or examples.is_empty():
        return pl.DataFrame(schema=schema)
    counts = (peak_tokens(examples)
              .join(assignments.select(pl.col("feature").cast(pl.Int32), pl.col("cluster").cast(pl.Int32)),
                    on="feature", how="inner")
              .group_by("cluster", "token").len()
              .sort(["cluster", "len", "token"], descending=[False, True, False]))
    return (counts.group_by("cluster", maintain_order=True).head(top_n)
            .group_by("cluster", maintain_order=True)
            .agg(pl.format("{} ({})", "token", "len").str.join(", ").alias("top_tokens"))
            .cast(schema))


def cluster_summary(table: pl.DataFrame, stats: pl.DataFrame, examples: pl.DataFrame | None,
                    top_n: int = 5) -> pl.DataFrame:
    """One row per cluster of the kept features of ``table`` (``feature``, ``kept``, ``cluster``, ``selected``),
    -1 = noise, sorted by cluster: ``size``, ``n_selected``, ``mean_density``, ``mean_max_activation``,
    ``mean_entropy`` (from ``stats``, ``feature_stats``), ``selected_features``, ``top_tokens``."""
    kept = (table.filter(pl.col("kept")).select("feature", "cluster", "selected")
            .join(stats.select(pl.col("feature").cast(pl.Int32), "density", "max_activation", "activation_entropy"),
                  on="feature", how="left"))
    if kept.is_empty():
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    summary = (kept.group_by("cluster")
               .agg(pl.len().alias("size"), pl.col("selected").sum().alias("n_selected"),
                    pl.col("density").mean().alias("mean_density"),
                    pl.col("max_activation").mean().alias("mean_max_activation"),
                    pl.col("activation_entropy").mean().alias("mean_entropy"),
                    pl.col("feature").filter(pl.col("selected")).sort().alias("selected_features"))
               .join(cluster_top_tokens(examples, kept, top_n), on="cluster", how="left")
               .with_columns(pl.col("top_tokens").fill_null(""))
               .sort("cluster"))
    return summary.select(list(SUMMARY_SCHEMA)).cast(SUMMARY_SCHEMA)
