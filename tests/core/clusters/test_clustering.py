from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from sae_assets.core.clusters.analysis import cluster_summary, cluster_top_tokens, select_representatives
from sae_assets.core.clusters.clustering import (
    ClusterConfig,
    ClusterResult,
    cluster,
    cluster_features,
    filter_features,
    reduce,
)
from sae_assets.core.clusters.plot import cluster_scatter_png
from sae_assets.core.common.progress import heartbeat
from sae_assets.core.common.umap_progress import umap_tqdm_kwds

N_BLOB, PER_BLOB, DIM = 3, 30, 32
N_EXTRA = 10  # filtered out: 5 dead, 5 with too low entropy


def _stats(entropy: list[float], density: list[float], max_activation: list[float] | None = None) -> pl.DataFrame:
    n = len(entropy)
    return pl.DataFrame({
        "feature": pl.Series(range(n), dtype=pl.Int32),
        "density": pl.Series(density, dtype=pl.Float64),
        "max_activation": pl.Series(max_activation or [1.0] * n, dtype=pl.Float32),
        "activation_entropy": pl.Series(entropy, dtype=pl.Float32),
    })


def _examples(rows: list[tuple[int, str, list[str], int]]) -> pl.DataFrame:
    """(feature, kind, tokens, peak index in the window) -> activation_examples rows."""
    return pl.DataFrame({
        "feature": pl.Series([r[0] for r in rows], dtype=pl.Int32),
        "kind": [r[1] for r in rows],
        "activation": pl.Series([1.0] * len(rows), dtype=pl.Float32),
        "token_position": pl.Series([100 + r[3] for r in rows], dtype=pl.Int32),
        "window_start": pl.Series([100] * len(rows), dtype=pl.Int32),
        "tokens": pl.Series([r[2] for r in rows], dtype=pl.List(pl.String)),
        "token_activations": pl.Series([[float(i == r[3]) for i in range(len(r[2]))] for r in rows],
                                       dtype=pl.List(pl.Float32)),
    })


@pytest.fixture(scope="module")
def blobs() -> tuple[pl.DataFrame, np.ndarray, np.ndarray, pl.DataFrame]:
    """Features 0..89: three Gaussian blobs in 32-D (truth 0, 1, 2); 90..99 filtered out."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(N_BLOB), PER_BLOB)
    centers = rng.normal(size=(N_BLOB, DIM)) * 3
    n = len(truth) + N_EXTRA
    vectors = np.concatenate([centers[truth] + rng.normal(size=(len(truth), DIM)) * 0.5,
                              rng.normal(size=(N_EXTRA, DIM))]).astype(np.float32)
    entropy = [*rng.uniform(1, 3, len(truth)), *[0.0] * 5, *[0.1] * 5]
    density = [*rng.uniform(1e-3, 1e-2, len(truth)), *[0.0] * 5, *[1e-3] * 5]
    stats = _stats(entropy, density, list(rng.uniform(1, 10, n)))
    examples = _examples([(0, "top", ["a", " Paris", "b"], 1), (1, "top", [" Paris"], 0),
                          (2, "top", ["x", " France"], 1), (2, "quantile", [" ignored"], 0),
                          (30, "top", [" cat"], 0)])
    return stats.sample(fraction=1.0, shuffle=True, seed=1), vectors, truth, examples


@pytest.fixture(scope="module")
def result(blobs) -> ClusterResult:
    stats, vectors, _, examples = blobs
    cfg = ClusterConfig(pca_components=16, n_neighbors=10, min_dist=0.0, method="dbscan", eps=1.0, min_samples=5,
                        features_per_cluster=3, sparsity_max=0.05, entropy_threshold_low=0.5)
    return cluster_features(stats, vectors, examples, cfg)


def test_filter_bounds_are_inclusive_and_dead_features_dropped() -> None:
    stats = _stats([0.0, 0.5, 1.0, 2.0, 3.0, 1.0], [0.0, 1e-3, 1e-2, 0.1, 0.5, float("nan")])
    cfg = ClusterConfig(entropy_threshold_low=0.5, entropy_threshold_high=2.0, sparsity_min=1e-3, sparsity_max=0.1)
    assert filter_features(stats, cfg).tolist() == [False, True, True, True, False, False]
    cfg = ClusterConfig(entropy_threshold_low=1.0, entropy_threshold_high=None, sparsity_min=None, sparsity_max=1e-2)
    assert filter_features(stats, cfg).tolist() == [False, False, True, False, False, False]
    unbounded = ClusterConfig(entropy_threshold_low=None, entropy_threshold_high=None, sparsity_min=None,
                              sparsity_max=None)
    assert filter_features(stats, unbounded).tolist() == [False, True, True, True, True, False]


def test_no_feature_passes_reports_observed_ranges() -> None:
    stats = _stats([0.25, 3.5, 9.0], [1e-4, 0.02, 0.0])  # the dead feature's entropy is not in the range
    cfg = ClusterConfig(entropy_threshold_low=5.0, entropy_threshold_high=None, sparsity_min=None, sparsity_max=None)
    with pytest.raises(ValueError) as err:
        filter_features(stats, cfg)
    message = str(err.value)
    assert "activation_entropy is in [0.25, 3.5]" in message and "density in [0.0001, 0.02]" in message
    assert "entropy_threshold_low=5.0" in message and "sparsity_max=None" in message and "2 live" in message
    with pytest.raises(ValueError, match="no live feature"):
        filter_features(_stats([1.0], [0.0]), cfg)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="method"):
        ClusterConfig(method="kmeans")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="selection"):
        ClusterConfig(selection="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sparsity"):
        ClusterConfig(sparsity_min=0.1, sparsity_max=0.01)


def test_dbscan_and_hdbscan_recover_the_blobs(blobs, result: ClusterResult) -> None:
    truth = blobs[2]
    kept = result.features.filter(pl.col("kept"))
    assert kept["feature"].to_list() == list(range(len(truth)))
    assert result.reduction == "pca(16) + umap(2, cosine)" and result.coords.shape == (len(truth), 2)
    assert adjusted_rand_score(truth, kept["cluster"].to_numpy()) > 0.95
    hdb = cluster(result.coords, ClusterConfig(method="hdbscan", min_cluster_size=10, min_samples=5))
    assert hdb.dtype == np.int32 and adjusted_rand_score(truth, hdb) > 0.95
    assert result.n_clusters == 3 and result.n_noise == 0 and result.n_kept == len(truth)


def test_reduce_is_deterministic_and_falls_back_on_few_points(blobs, result: ClusterResult) -> None:
    vectors = blobs[1][: len(blobs[2])]
    cfg = ClusterConfig(pca_components=16, n_neighbors=10, min_dist=0.0)
    coords, _ = reduce(vectors, cfg)
    assert np.array_equal(coords, result.coords)
    few, note = reduce(vectors[:8], ClusterConfig(n_components=3))
    assert few.shape == (8, 3) and few.dtype == np.float32 and "umap skipped" in note
    one, _ = reduce(vectors[:1], cfg)
    assert one.shape == (1, 2) and not one.any()
    assert reduce(vectors[:0], cfg)[0].shape == (0, 2)
    assert cluster(np.zeros((0, 2)), cfg).shape == (0,) and cluster(few[:3, :2], cfg).tolist() == [-1, -1, -1]


def test_result_table(result: ClusterResult) -> None:
    table = result.features
    assert table.schema == pl.Schema({"feature": pl.Int32, "kept": pl.Boolean, "cluster": pl.Int32,
                                      "x": pl.Float32, "y": pl.Float32, "selected": pl.Boolean})
    assert table["feature"].to_list() == list(range(N_BLOB * PER_BLOB + N_EXTRA))
    dropped = table.filter(~pl.col("kept"))
    assert dropped.height == N_EXTRA and dropped["cluster"].null_count() == N_EXTRA
    assert dropped["x"].null_count() == N_EXTRA and not dropped["selected"].any()
    assert table.filter(pl.col("kept"))["x"].null_count() == 0
    per_cluster = table.filter(pl.col("selected")).group_by("cluster").len()
    assert sorted(per_cluster["len"].to_list()) == [3, 3, 3] and result.n_selected == 9
    assert result.counts()["n_features"] == 100


def test_summary(result: ClusterResult, blobs) -> None:
    summary = result.summary
    assert summary["size"].to_list() == [PER_BLOB] * 3 and summary["n_selected"].to_list() == [3] * 3
    stats = blobs[0].sort("feature")
    table = result.features
    first = table.filter(pl.col("feature") == 0)["cluster"].item()
    row = summary.filter(pl.col("cluster") == first)
    members = table.filter(pl.col("cluster") == first)["feature"].to_numpy()
    assert row["mean_density"].item() == pytest.approx(stats["density"].to_numpy()[members].mean())
    assert row["selected_features"].item().to_list() == (
        table.filter((pl.col("cluster") == first) & pl.col("selected"))["feature"].to_list())
    assert row["top_tokens"].item() == "Paris (2), France (1)"
    other = table.filter(pl.col("feature") == 30)["cluster"].item()
    assert summary.filter(pl.col("cluster") == other)["top_tokens"].item() == "cat (1)"


def test_select_representatives_by_hand() -> None:
    # cluster 0: a plus around (1, 0); cluster 1: two points; one noise point with the largest activation
    coords = np.array([[0, 0], [2, 0], [1, 0], [1, 1], [1, -1], [10, 10], [12, 10], [50, 50]], dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 0, 1, 1, -1])
    features = np.array([7, 3, 9, 1, 5, 20, 21, 99])
    max_act = np.array([5.0, 5.0, 1.0, 4.0, 6.0, 2.0, 3.0, 100.0])
    top = select_representatives(labels, coords, max_act, features, 2, "max_activation")
    assert features[top].tolist() == [3, 5, 20, 21]  # 6.0 (5), then the 5.0 tie to feature 3 (not 7)
    central = select_representatives(labels, coords, max_act, features, 2, "centroid")
    assert features[central].tolist() == [9, 1, 20, 21]  # the centre, then of four at distance 1 the lowest id
    assert select_representatives(labels, coords, max_act, features, 1, "centroid").sum() == 2
    all_noise = select_representatives(np.full(3, -1), coords[:3], max_act[:3], features[:3], 2)
    assert features[:3][all_noise].tolist() == [7, 3]  # 5.0 and 5.0
    assert not select_representatives(np.zeros(0, int), np.zeros((0, 2)), np.zeros(0), np.zeros(0, int), 2).any()


def test_top_tokens_from_hand_made_examples() -> None:
    examples = _examples([
        (0, "top", ["the", " Paris", "."], 1), (0, "top", [" Paris"], 0), (1, "top", ["\n", "x"], 0),
        (1, "top", ["Rome ", "x"], 0), (1, "top", [" Rome"], 0), (1, "top", [" ", "y"], 0),
        (2, "top", [" Berlin"], 0), (1, "random", [" Paris"], 0), (0, "quantile", [" Rome"], 0),
        (0, "top", [" Oslo"], 5),  # peak index outside the window: skipped
        (3, "top", [" Madrid"], 0), (4, "top", [" cat"], 0),
    ])
    assignments = pl.DataFrame({"feature": [0, 1, 2, 3, 4], "cluster": [0, 0, 0, 0, 1]})
    top = cluster_top_tokens(examples, assignments, top_n=4).sort("cluster")
    assert top["cluster"].to_list() == [0, 1]
    assert top["top_tokens"].to_list() == ["Paris (2), Rome (2), Berlin (1), Madrid (1)", "cat (1)"]
    assert cluster_top_tokens(examples, assignments, top_n=5)["top_tokens"][0].endswith("Madrid (1), \\n (1)")
    assert cluster_top_tokens(None, assignments).schema == pl.Schema({"cluster": pl.Int32, "top_tokens": pl.String})
    table = assignments.with_columns(pl.lit(True).alias("kept"), pl.col("feature").is_in([0]).alias("selected"))
    summary = cluster_summary(table, _stats([1.0] * 5, [0.1, 0.2, 0.3, 0.4, 0.5]), None)
    assert summary["mean_density"].to_list() == pytest.approx([0.25, 0.5]) and summary["top_tokens"].to_list() == [
        "", ""]


def test_scatter_plot_is_png(result: ClusterResult) -> None:
    table = result.features.filter(pl.col("kept"))
    labels = table["cluster"].to_numpy().copy()
    labels[:5] = -1
    png = cluster_scatter_png(table["x"].to_numpy(), table["y"].to_numpy(), labels, table["selected"].to_numpy(),
                              table["feature"].to_numpy(), title="layer 6")
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert cluster_scatter_png(np.zeros(0), np.zeros(0), np.zeros(0, int)).startswith(b"\x89PNG")


def test_few_features_are_all_noise_and_still_get_targets() -> None:
    stats = _stats([1.0, 1.0, 0.0, 1.0, 1.0], [0.01, 0.01, 0.01, 0.0, 0.01], [3.0, 9.0, 20.0, 50.0, 9.0])
    vectors = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    cfg = ClusterConfig(features_per_cluster=2, selection="max_activation")
    result = cluster_features(stats, vectors, None, cfg)
    assert "umap skipped" in result.reduction and result.counts() == {
        "n_features": 5, "n_kept": 3, "n_clusters": 0, "n_noise": 3, "n_selected": 2}
    assert result.features["cluster"].to_list() == [-1, -1, None, None, -1]
    assert result.features.filter(pl.col("selected"))["feature"].to_list() == [1, 4]  # 9.0 tie: both, not 0
    assert result.summary.select("cluster", "size", "n_selected").rows() == [(-1, 3, 2)]
    with pytest.raises(ValueError, match="features 0..3"):
        cluster_features(stats, vectors[:4], None, cfg)


def test_umap_and_clustering_progress_is_reported(blobs) -> None:
    vectors = blobs[1][: PER_BLOB * N_BLOB]
    messages: list[str] = []
    coords, _ = reduce(vectors, ClusterConfig(seed=0), report=messages.append)
    assert np.array_equal(coords, reduce(vectors, ClusterConfig(seed=0))[0])  # reporting changes nothing
    epochs = [m for m in messages if "epochs" in m]  # tqdm's first and last lines at least
    assert epochs and epochs[-1].startswith("cluster UMAP of 90 points: ") and "ETA" in epochs[-1]
    assert "/500 epochs (100%)" in epochs[-1]
    assert umap_tqdm_kwds(None, "x") == {"disable": True}
    beats: list[str] = []
    with heartbeat(beats.append, "slow call", every_s=0.05) as report:
        report("phase 1: 3/10 done")
        time.sleep(0.3)
    assert beats[0] == "phase 1: 3/10 done"  # forwarded at once
    assert len(beats) > 1 and beats[1].startswith("slow call: running for 0s; last: phase 1: 3/10 done")
    count = len(beats)
    time.sleep(0.1)
    assert len(beats) == count  # stopped with the block
    quiet: list[str] = []
    with heartbeat(quiet.append, "busy", every_s=0.2) as report:
        for i in range(8):  # reporting more often than every_s: the heartbeat stays silent
            report(f"step {i}")
            time.sleep(0.05)
    assert quiet == [f"step {i}" for i in range(8)]
    with heartbeat(None, "no one listens") as report:
        report("dropped")
