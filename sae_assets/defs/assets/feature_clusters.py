"""``feature_clusters``: features filtered by entropy/density, reduced (PCA + UMAP), clustered, targets chosen."""

import time
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from sae_assets.core.clusters.clustering import ClusterConfig, cluster_features
from sae_assets.core.clusters.plot import cluster_scatter_png
from sae_assets.core.common.list_columns import list_matrix
from sae_assets.core.common.progress import heartbeat
from sae_assets.defs.automation import cheap_refresh
from sae_assets.defs.inputs import StepInputs
from sae_assets.defs.metadata import input_table_versions, md_text, png_markdown, table_metadata
from sae_assets.defs.numba_cache import use_platform_numba_cache
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.defs.run_config import ConfigPair, core_config
from sae_assets.resources.lake import LakeResource

VECTOR_TABLES = {"profile": ("feature_profiles", "profile"), "decoder": ("sae_decoder", "decoder")}


class FeatureClustersConfig(dg.Config):
    """Defaults of the fields shared with :class:`ClusterConfig` are its defaults (see ``CLUSTER_CONFIG``)."""

    representation: Literal["profile", "decoder"] = Field(
        default="profile", description="Cluster features by their activation profile over the scanned documents "
        "(feature_profiles) or by their decoder vector (sae_decoder).")
    entropy_threshold_low: float | None = Field(default=ClusterConfig.entropy_threshold_low,
                                                description="Lowest activation_entropy kept.")
    entropy_threshold_high: float | None = Field(default=ClusterConfig.entropy_threshold_high,
                                                 description="Highest activation_entropy kept.")
    sparsity_min: float | None = Field(default=ClusterConfig.sparsity_min,
                                       description="Lowest density kept (dead features never are).")
    sparsity_max: float | None = Field(default=ClusterConfig.sparsity_max, description="Highest density kept.")
    pca_components: int | None = Field(default=ClusterConfig.pca_components, description="PCA dimensions before UMAP.")
    n_neighbors: int = Field(default=ClusterConfig.n_neighbors, description="UMAP n_neighbors.")
    min_dist: float = Field(default=ClusterConfig.min_dist, description="UMAP min_dist.")
    metric: str = Field(default=ClusterConfig.metric, description="UMAP metric.")
    method: Literal["dbscan", "hdbscan"] = Field(default=ClusterConfig.method, description="Clustering algorithm.")
    eps: float = Field(default=ClusterConfig.eps, description="DBSCAN eps in the 2-D map.")
    min_samples: int = Field(default=ClusterConfig.min_samples, description="DBSCAN/HDBSCAN min_samples.")
    min_cluster_size: int = Field(default=ClusterConfig.min_cluster_size, description="HDBSCAN min_cluster_size.")
    features_per_cluster: int = Field(default=ClusterConfig.features_per_cluster,
                                      description="Targets selected per cluster.")
    selection: Literal["max_activation", "centroid"] = Field(
        default=ClusterConfig.selection, description="Targets: highest max activation, or closest to the centroid.")
    seed: int = Field(default=ClusterConfig.seed, description="Seed of PCA and UMAP.")

    def cluster_config(self) -> ClusterConfig:
        return core_config(self, ClusterConfig)


CLUSTER_CONFIG = ConfigPair(
    FeatureClustersConfig, ClusterConfig,
    asset_only={"representation": "which table's vectors the asset reads (feature_profiles or sae_decoder)"},
    core_only={"n_components": "the asset's table and plot are the 2-D map (x, y): the core default 2"},
)


def _summary_markdown(summary: pl.DataFrame, n: int = 20) -> str:
    lines = ["| cluster | size | targets | mean density | mean max act | top tokens |", "|---|---|---|---|---|---|"]
    for r in summary.filter(pl.col("cluster") >= 0).sort("size", descending=True).head(n).iter_rows(named=True):
        lines.append(f"| {r['cluster']} | {r['size']} | {', '.join(map(str, r['selected_features']))} | "
                     f"{r['mean_density']:.2e} | {r['mean_max_activation']:.2f} | {md_text(r['top_tokens'])} |")
    return "\n".join(lines)


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=["feature_stats", "feature_profiles", "activation_examples", "sae_decoder"],
    kinds={"umap", "scikitlearn", "polars", "delta"},
    group_name="clusters",
    owners=["team:interpretability"],
    code_version="1",
    automation_condition=cheap_refresh(),
    description="Per feature: kept by the entropy/density filter, cluster (-1 noise), x/y of the 2-D map, and "
    "whether it is a selected target for prompt optimization. Cluster scatter and table in metadata.",
)
def feature_clusters(context: dg.AssetExecutionContext, config: FeatureClustersConfig,
                     lake: LakeResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    use_platform_numba_cache(lake)  # UMAP's kernels compiled once per machine, not per step process
    inputs = input_table_versions(context, lake)
    model, layer = location.model_key, location.layer
    table, column = VECTOR_TABLES[config.representation]
    upstream = StepInputs(lake, "feature_clusters", model, layer)
    upstream.require("feature_stats", "activation_examples", table)
    try:
        cfg = config.cluster_config()
    except ValueError as err:
        raise dg.Failure(f"feature_clusters config: {err}") from err
    # Reading, UMAP and HDBSCAN run for tens of seconds at 16k+ features: never silent for more than 10 s.
    with heartbeat(context.log.info, f"feature_clusters {model} layer {layer}") as report:
        stats = upstream.read("feature_stats")
        vectors_frame = upstream.read(table, ["feature", column]).sort("feature")
        if vectors_frame.height != stats.height:
            raise dg.Failure(f"{model} layer {layer}: feature_stats has {stats.height} rows and {table} "
                             f"{vectors_frame.height}; re-materialize activation_scan and sae_decoder for this "
                             "partition.")
        vectors = list_matrix(vectors_frame[column])
        examples = lake.read_partition("activation_examples", model, layer, ["feature", "kind", "tokens",
                                       "token_position", "window_start"], keep=pl.col("kind") == "top")
        start = time.perf_counter()
        try:
            result = cluster_features(stats, vectors, examples, cfg, report)
        except ValueError as err:
            raise dg.Failure(f"feature_clusters {model} layer {layer}: {err}") from err
        seconds = time.perf_counter() - start
        report(f"{model} layer {layer}: {result.reduction}; {result.n_kept} of {result.n_features} features kept, "
               f"{result.n_clusters} clusters, {result.n_selected} targets ({seconds:.1f}s)")
        written = lake.write_partition("feature_clusters", result.features, model, layer)
        kept = result.features.filter(pl.col("kept"))
        scatter = cluster_scatter_png(kept["x"].to_numpy(), kept["y"].to_numpy(), kept["cluster"].to_numpy(),
                                      kept["selected"].to_numpy(), kept["feature"].to_numpy(),
                                      title=f"{model} L{layer} ({config.representation})")
    targets = result.features.filter(pl.col("selected"))["feature"].to_list()
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs), **result.counts(), "representation": config.representation,
        "reduction": result.reduction, "seconds": round(seconds, 1),
        "targets": dg.MetadataValue.json(targets),
        "clusters": dg.MetadataValue.md(_summary_markdown(result.summary)),
        "scatter": png_markdown(scatter, "feature clusters"),
        "noise_fraction": float(result.n_noise / max(result.n_kept, 1)),
        "kept_fraction": float(np.mean(result.features["kept"].to_numpy())),
    })
