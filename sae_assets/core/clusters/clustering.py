"""Feature clustering (seed 002): filter SAE features by entropy and density, reduce, cluster, select targets.

The pipeline over one SAE of ``n_features`` features, each with a vector (decoder direction or activation
profile, the caller's choice):

1. :func:`filter_features`: keep live features whose ``activation_entropy`` and ``density`` (``feature_stats``)
   lie inside inclusive bounds;
2. :func:`reduce`: PCA then UMAP to ``n_components`` (2: ``x``, ``y``) coordinates;
3. :func:`cluster`: DBSCAN or HDBSCAN on the coordinates (label -1 = noise);
4. :func:`~sae_assets.core.clusters.analysis.select_representatives` and
   :func:`~sae_assets.core.clusters.analysis.cluster_summary`: target features and a per-cluster table.

:func:`cluster_features` runs them all and returns a :class:`ClusterResult`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from sae_assets.core.clusters.analysis import cluster_summary, select_representatives
from sae_assets.core.common.progress import Report
from sae_assets.core.common.similarity import unit_rows
from sae_assets.core.common.umap_cache import load_umap
from sae_assets.core.common.umap_progress import umap_tqdm_kwds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    entropy_threshold_low: float | None = 0.5
    """Lowest ``activation_entropy`` (nats over documents) kept, inclusive; None: no bound. Low entropy: the
    feature fires in very few documents (too specific to be a useful target)."""
    entropy_threshold_high: float | None = None
    """Highest ``activation_entropy`` kept, inclusive; None: no bound."""
    sparsity_min: float | None = 1e-5
    """Lowest ``density`` (fraction of tokens where the feature is active) kept, inclusive; None: no bound.
    Dead features (density 0) are never kept, whatever the bounds."""
    sparsity_max: float | None = 0.05
    """Highest ``density`` kept, inclusive; None: no bound. Very dense features are rarely interpretable."""
    pca_components: int | None = 50
    """PCA dimensions before UMAP; skipped when the vectors have this many dimensions or fewer, or when None."""
    n_neighbors: int = 15
    """UMAP neighbourhood size; with this many points or fewer (+1) UMAP is skipped for PCA alone."""
    min_dist: float = 0.1
    """UMAP minimum distance between embedded points."""
    n_components: int = 2
    """Dimensions of the reduced space (at least 2; the first two are the table's ``x``, ``y``)."""
    metric: str = "cosine"
    """UMAP metric on the (PCA-reduced) vectors; with ``cosine`` the vectors are L2-normalised before PCA."""
    method: Literal["dbscan", "hdbscan"] = "hdbscan"
    """Clustering algorithm on the reduced coordinates (sklearn ``DBSCAN`` or ``HDBSCAN``, euclidean)."""
    eps: float = 0.5
    """DBSCAN neighbourhood radius in the reduced space."""
    min_samples: int = 5
    """DBSCAN core-point neighbours (itself included); HDBSCAN ``min_samples`` (density smoothing)."""
    min_cluster_size: int = 10
    """HDBSCAN smallest cluster."""
    features_per_cluster: int = 3
    """Target features selected per cluster (noise is skipped unless every point is noise)."""
    selection: Literal["max_activation", "centroid"] = "max_activation"
    """Which features of a cluster are targets: the highest ``max_activation``, or the closest to the
    cluster's centroid in the reduced space; ties go to the lower feature index."""
    seed: int = 0
    """Seed of PCA and UMAP: the same inputs and seed give the same coordinates."""

    def __post_init__(self) -> None:
        if self.method not in ("dbscan", "hdbscan"):
            raise ValueError(f"method must be 'dbscan' or 'hdbscan', not {self.method!r}")
        if self.selection not in ("max_activation", "centroid"):
            raise ValueError(f"selection must be 'max_activation' or 'centroid', not {self.selection!r}")
        if self.n_components < 2:
            raise ValueError(f"n_components must be at least 2, not {self.n_components}")
        for low, high, name in ((self.entropy_threshold_low, self.entropy_threshold_high, "entropy_threshold"),
                                (self.sparsity_min, self.sparsity_max, "sparsity")):
            if low is not None and high is not None and low > high:
                raise ValueError(f"{name}: lower bound {low} is above upper bound {high}")


@dataclass(frozen=True)
class ClusterResult:
    features: pl.DataFrame
    """One row per SAE feature, ordered by ``feature`` (int32): ``kept`` (bool), ``cluster`` (int32; -1 noise,
    null when not kept), ``x``, ``y`` (float32, null when not kept), ``selected`` (bool)."""
    summary: pl.DataFrame
    """One row per cluster (-1 = noise): see :func:`~sae_assets.core.clusters.analysis.cluster_summary`."""
    coords: np.ndarray
    """``[n_kept, n_components]`` float32 coordinates of the kept features, in feature order."""
    reduction: str
    """How the coordinates were made, e.g. ``pca(50) + umap(2, cosine)``, or the fallback taken."""
    n_features: int
    n_kept: int
    n_clusters: int
    """Clusters, noise not counted."""
    n_noise: int
    n_selected: int

    def counts(self) -> dict[str, int]:
        return {"n_features": self.n_features, "n_kept": self.n_kept, "n_clusters": self.n_clusters,
                "n_noise": self.n_noise, "n_selected": self.n_selected}


def filter_features(stats: pl.DataFrame, cfg: ClusterConfig) -> np.ndarray:
    """``[n]`` bool, one per row of ``stats`` (``feature_stats`` columns ``activation_entropy`` and ``density``):
    live (density > 0) and inside the configured inclusive bounds. Raises ValueError when nothing passes."""
    entropy = stats["activation_entropy"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    density = stats["density"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    kept = density > 0
    for values, low, high in ((entropy, cfg.entropy_threshold_low, cfg.entropy_threshold_high),
                              (density, cfg.sparsity_min, cfg.sparsity_max)):
        if low is not None:
            kept &= values >= low
        if high is not None:
            kept &= values <= high
    if not kept.any():
        raise ValueError(_nothing_passes(entropy, density, cfg))
    return kept


def _nothing_passes(entropy: np.ndarray, density: np.ndarray, cfg: ClusterConfig) -> str:
    live = density > 0
    thresholds = (f"entropy_threshold_low={cfg.entropy_threshold_low}, "
                  f"entropy_threshold_high={cfg.entropy_threshold_high}, "
                  f"sparsity_min={cfg.sparsity_min}, sparsity_max={cfg.sparsity_max}")
    head = f"no feature passes the cluster filter ({len(density)} features, {int(live.sum())} live)"
    if not live.any():
        return f"{head}: no live feature (density > 0); thresholds: {thresholds}"

    def span(values: np.ndarray) -> str:
        return f"[{np.nanmin(values):.4g}, {np.nanmax(values):.4g}]"

    return (f"{head}: over live features activation_entropy is in {span(entropy[live])} and density in "
            f"{span(density[live])}; thresholds: {thresholds}")


def reduce(vectors: np.ndarray, cfg: ClusterConfig, report: Report | None = None) -> tuple[np.ndarray, str]:
    """``vectors [n, dim]`` -> ``([n, n_components] float32, note)``: PCA to ``pca_components`` then UMAP.

    With ``n <= n_neighbors + 1`` points UMAP is skipped and the coordinates are the first principal components
    (zero-padded when fewer exist); the note says which path was taken. Deterministic for a given ``seed``.
    ``report`` gets a line per phase and UMAP's epochs (done, rate, ETA) at most every 10 s.
    """
    x = np.asarray(vectors, dtype=np.float32)
    n, dim = x.shape
    k = cfg.n_components
    if n == 0:
        return np.zeros((0, k), dtype=np.float32), "no points"
    if cfg.metric == "cosine":
        x = unit_rows(x)
    steps = []
    if cfg.pca_components is not None and dim > cfg.pca_components and n > 1:
        if report is not None:
            report(f"cluster reduction: PCA of {n:,} x {dim} vectors to {min(cfg.pca_components, n)} dimensions")
        x = _pca(x, min(cfg.pca_components, n), cfg.seed)
        steps.append(f"pca({x.shape[1]})")
    if n <= cfg.n_neighbors + 1:
        coords = _pca(x, min(k, n, x.shape[1]), cfg.seed) if n > 1 else np.zeros((n, 1), dtype=np.float32)
        coords = np.pad(coords, ((0, 0), (0, k - coords.shape[1])))
        note = " + ".join([*steps, f"pca({k})"]) + f": umap skipped, {n} points <= n_neighbors + 1"
        log.info("cluster reduction: %s", note)
        return coords.astype(np.float32), note
    umap = load_umap()  # heavy (numba): imported only when used; kernels cached on disk

    what = f"cluster UMAP of {n:,} points"
    reducer = umap.UMAP(n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist, n_components=k, metric=cfg.metric,
                        random_state=cfg.seed, n_jobs=1, tqdm_kwds=umap_tqdm_kwds(report, what))
    if report is not None:
        report(f"{what}: {cfg.n_neighbors} neighbours, then the layout's epochs")
    coords = np.asarray(reducer.fit_transform(x), dtype=np.float32)
    note = " + ".join([*steps, f"umap({k}, {cfg.metric})"])
    log.info("cluster reduction of %d points: %s", n, note)
    return coords, note


def _pca(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=k, random_state=seed).fit_transform(x).astype(np.float32)


def cluster(coords: np.ndarray, cfg: ClusterConfig, report: Report | None = None) -> np.ndarray:
    """``coords [n, c]`` -> ``[n]`` int32 cluster labels, -1 = noise (euclidean DBSCAN or HDBSCAN)."""
    from sklearn.cluster import DBSCAN, HDBSCAN

    n = len(coords)
    if cfg.method == "dbscan":
        if n == 0:
            return np.zeros(0, dtype=np.int32)
        if report is not None:
            report(f"DBSCAN of {n:,} points")
        labels = DBSCAN(eps=cfg.eps, min_samples=cfg.min_samples).fit_predict(coords)
    else:
        if n < max(cfg.min_cluster_size, 2):  # no cluster can form
            return np.full(n, -1, dtype=np.int32)
        if report is not None:
            report(f"HDBSCAN of {n:,} points")
        labels = HDBSCAN(min_cluster_size=cfg.min_cluster_size, min_samples=min(cfg.min_samples, n),
                         copy=True).fit_predict(coords)
    return labels.astype(np.int32)


def cluster_features(stats: pl.DataFrame, vectors: np.ndarray, examples: pl.DataFrame | None,
                     cfg: ClusterConfig, report: Report | None = None) -> ClusterResult:
    """Filter, reduce, cluster and select targets for one SAE.

    ``stats``: ``feature_stats`` rows, one per feature ``0..n_features-1`` (any order); ``vectors
    [n_features, dim]``: one vector per feature, row ``i`` for feature ``i``; ``examples``: the
    ``activation_examples`` rows of this SAE (for the clusters' top tokens), or None. ``report``: a line per phase
    and UMAP's epochs (wrap the call in :func:`~sae_assets.core.common.progress.heartbeat` to hear from it every
    10 s whatever runs).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    stats = stats.sort("feature")
    if not np.array_equal(stats["feature"].to_numpy(), np.arange(n)):
        raise ValueError(f"stats must hold features 0..{n - 1} once each (one per vector row), got "
                         f"{stats.height} rows")
    kept = filter_features(stats, cfg)
    index = np.flatnonzero(kept)
    coords, note = reduce(vectors[index], cfg, report)
    labels = cluster(coords, cfg, report)
    max_activation = stats["max_activation"].cast(pl.Float64).fill_null(float("nan")).to_numpy()[index]
    chosen = select_representatives(labels, coords, max_activation, index, cfg.features_per_cluster, cfg.selection)

    full_labels = np.full(n, -1, dtype=np.int32)
    full_labels[index] = labels
    xy = np.zeros((n, 2), dtype=np.float32)
    xy[index] = coords[:, :2]
    selected = np.zeros(n, dtype=bool)
    selected[index] = chosen
    table = pl.DataFrame({
        "feature": pl.Series(np.arange(n), dtype=pl.Int32),
        "kept": pl.Series(kept, dtype=pl.Boolean),
        "cluster": pl.Series(full_labels, dtype=pl.Int32),
        "x": pl.Series(xy[:, 0], dtype=pl.Float32),
        "y": pl.Series(xy[:, 1], dtype=pl.Float32),
        "selected": pl.Series(selected, dtype=pl.Boolean),
    }).with_columns(pl.when(pl.col("kept")).then(pl.col(c)).alias(c) for c in ("cluster", "x", "y"))
    summary = cluster_summary(table, stats, examples)
    n_clusters = len(np.unique(labels[labels >= 0]))
    log.info("clustered %d of %d features: %d clusters, %d noise, %d selected", len(index), n, n_clusters,
             int((labels < 0).sum()), int(chosen.sum()))
    return ClusterResult(features=table, summary=summary, coords=coords, reduction=note, n_features=n,
                         n_kept=len(index), n_clusters=n_clusters, n_noise=int((labels < 0).sum()),
                         n_selected=int(chosen.sum()))
