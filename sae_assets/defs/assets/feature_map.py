"""``feature_map``: SAE decoder vectors -> 3-D UMAP map, cosine k-NN edges and the web viewer's JSON (seed 004)."""

from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from sae_assets.core.common.atomic_file import stage_file
from sae_assets.core.common.plots import figure_png
from sae_assets.core.common.progress import heartbeat
from sae_assets.core.feature_map.layer_map import LayerMap, layer_map
from sae_assets.core.feature_map.layout import (
    FeatureMapConfig,
    commit_layer,
    encode,
    layer_entry,
    layer_file_name,
    write_manifest,
)
from sae_assets.core.labels.choice import shown_label
from sae_assets.defs.automation import cheap_refresh
from sae_assets.defs.inputs import StepInputs
from sae_assets.defs.metadata import input_table_versions, png_markdown, table_metadata, viewer_link
from sae_assets.defs.numba_cache import use_platform_numba_cache
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.defs.run_config import ConfigPair, core_config
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from sae_assets.storage.delta import WriteResult


class FeatureMapRunConfig(dg.Config):
    """Defaults are :class:`FeatureMapConfig`'s (see ``FEATURE_MAP_CONFIG``)."""

    n_neighbors: int = Field(default=FeatureMapConfig.n_neighbors,
                             description="UMAP n_neighbors (the point itself included).")
    min_dist: float = Field(default=FeatureMapConfig.min_dist, description="UMAP min_dist.")
    metric: Literal["cosine"] = Field(default=FeatureMapConfig.metric,
                                      description="Similarity of decoder vectors (cosine only).")
    seed: int = Field(default=FeatureMapConfig.seed, description="UMAP random_state.")
    n_epochs: int | None = Field(default=FeatureMapConfig.n_epochs,
                                 description="UMAP layout epochs (None: umap-learn's default, 200 or 500).")
    init: Literal["pca", "spectral", "random"] = Field(
        default=FeatureMapConfig.init,
        description="UMAP initial layout (spectral: umap-learn's default, slower at 16k features).")
    k_edges: int = Field(default=FeatureMapConfig.k_edges,
                         description="Nearest neighbours of each feature considered as edges.")
    edge_threshold: float = Field(default=FeatureMapConfig.edge_threshold,
                                  description="Lowest cosine similarity kept as an edge.")
    precision: int = Field(default=FeatureMapConfig.precision,
                           description="Float digits in the JSON (decimals; density: significant).")
    gzip: bool = Field(default=FeatureMapConfig.gzip, description="Write layer-N.json.gz instead of layer-N.json.")

    def feature_map_config(self) -> FeatureMapConfig:
        return core_config(self, FeatureMapConfig)


FEATURE_MAP_CONFIG = ConfigPair(FeatureMapRunConfig, FeatureMapConfig)


def _by_feature(upstream: StepInputs, table: str, column: str, keep: pl.Expr | None = None) -> dict:
    """Feature -> ``column`` of the partition's rows of ``table`` (those matching ``keep``); {} without the table."""
    lazy = upstream.optional(table)
    if lazy is None:
        return {}
    frame = (lazy if keep is None else lazy.filter(keep)).select("feature", column).collect()
    return dict(zip(frame["feature"].to_list(), frame[column].to_list(), strict=True))


def _labels(upstream: StepInputs) -> dict[int, str]:
    """Feature -> the shown label (:func:`~sae_assets.core.labels.choice.shown_label`: feature_labels.label, else
    the partition's explanation), from those materialized."""
    explanation = _by_feature(upstream, "explanations", "description",  # a feature may have several
                              pl.col("description").is_not_null() & (pl.col("description") != ""))
    chosen = _by_feature(upstream, "feature_labels", "label")
    shown = {f: shown_label(chosen.get(f), explanation.get(f)) for f in explanation.keys() | chosen.keys()}
    return {f: label for f, label in shown.items() if label is not None}


def publish_layer(lake: LakeResource, where: str, model: str, layer: int, built: LayerMap,
                  gzip: bool) -> tuple[WriteResult, WriteResult, Path, Path, dict]:
    """The two tables written and the viewer's files published: the layer's JSON is staged first (a failure from
    there on publishes nothing), committed once the tables are written, then the manifest rebuilt. Returns the two
    writes, the layer file, the manifest file and the manifest."""
    try:
        export_dir = lake.local_dir("exports", "feature_map", model)
        staged = stage_file(export_dir / layer_file_name(layer, gzip), encode(built.payload, gzip))
    except (OSError, ValueError) as err:
        raise dg.Failure(f"{where}: cannot write the JSON export: {err}", allow_retries=False) from err
    try:
        written = lake.write_partition("feature_map", built.nodes, model, layer)
        edges_written = lake.write_partition("feature_map_edges", built.edges, model, layer)
    except BaseException:
        staged.discard()
        raise
    try:
        layer_path = commit_layer(staged)
        manifest_path, manifest = write_manifest(export_dir, model, [layer_entry(layer_path, built.payload)])
    except OSError as err:
        staged.discard()
        raise dg.Failure(f"{where}: tables written (feature_map v{written.version}) but publishing the JSON in "
                         f"{export_dir} failed: {err}; re-run the partition.") from err
    return written, edges_written, layer_path, manifest_path, manifest


def _preview_png(coords: np.ndarray, density: np.ndarray, title: str) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=90)
    known = np.isfinite(density) & (density > 0)
    if (~known).any():
        ax.scatter(coords[~known, 0], coords[~known, 1], s=4, c="#BBBBBB", label="no density / dead")
        ax.legend(fontsize=8, loc="best")
    if known.any():
        points = ax.scatter(coords[known, 0], coords[known, 1], s=4, c=np.log10(density[known]), cmap="viridis")
        fig.colorbar(points, ax=ax, label="log10 density")
    ax.set_title(title)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    return figure_png(fig)


@dg.asset(
    partitions_def=model_layer_partitions,
    # Labels, density and clusters are joined where they exist: listed so a run orders them first.
    deps=["sae_decoder", "feature_stats", "feature_clusters", "feature_labels", "explanations"],
    kinds={"umap", "torch", "polars", "delta"},
    group_name="feature_map",
    owners=["team:interpretability"],
    code_version="1",
    automation_condition=cheap_refresh(),
    description="Per feature: a 3-D UMAP position of its decoder vector (cosine), label, density and cluster; "
    "edges to its k nearest features (table feature_map_edges); the web viewer's layer-N.json and manifest.json "
    "under <files>/exports/feature_map/<model>/. Labels come from explanations, else feature_labels, density from "
    "feature_stats, clusters from feature_clusters, where they exist. View: python -m sae_assets.viewer",
)
def feature_map(context: dg.AssetExecutionContext, config: FeatureMapRunConfig, lake: LakeResource,
                device: DeviceResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    use_platform_numba_cache(lake)  # UMAP's kernels compiled once per machine, not per step process
    inputs = input_table_versions(context, lake)
    model, layer = location.model_key, location.layer
    upstream = StepInputs(lake, "feature_map", model, layer)
    where = upstream.where
    try:
        cfg = config.feature_map_config()
    except ValueError as err:
        raise dg.Failure(f"{where} config: {err}") from err
    decoder = upstream.decoder()
    labels, density = _labels(upstream), _by_feature(upstream, "feature_stats", "density")
    clusters = _by_feature(upstream, "feature_clusters", "cluster", pl.col("kept"))  # -1: noise
    try:
        with heartbeat(context.log.info, where) as report:  # UMAP's graph is silent for tens of seconds at 32k
            built = layer_map(decoder, cfg, model=model, layer=layer, labels=labels, density=density,
                              clusters=clusters, device=device.torch_device(), report=report)
    except ValueError as err:
        raise dg.Failure(f"{where}: {err}", allow_retries=False) from err
    fmap, nodes, edges = built.fmap, built.nodes, built.edges
    context.log.info("%s: exact %d-NN of %d x %d vectors in %.1fs, UMAP 3-D in %.1fs", where, cfg.knn_k,
                     *built.shape, fmap.knn_seconds, fmap.umap_seconds)
    written, edges_written, layer_path, manifest_path, manifest = publish_layer(lake, where, model, layer, built,
                                                                                 cfg.gzip)
    density_values = nodes["density"].fill_null(float("nan")).to_numpy()
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs),
        "edges": dg.MetadataValue.int(edges.height),
        "edges_uri": dg.MetadataValue.text(edges_written.uri),
        "edges_table_version": dg.MetadataValue.int(edges_written.version),
        "mean_degree": float(edges.height / max(nodes.height, 1)),
        "knn_k": cfg.knn_k,
        "knn_seconds": round(fmap.knn_seconds, 2),
        "umap_seconds": round(fmap.umap_seconds, 2),
        "n_labelled": int(nodes["label"].is_not_null().sum()),
        "viewer": viewer_link(model, layer),  # python -m sae_assets.viewer; a point opens its feature page
        "n_clustered": int(nodes["cluster"].is_not_null().sum()),
        "json": dg.MetadataValue.path(str(layer_path)),
        "json_bytes": layer_path.stat().st_size,
        "manifest": dg.MetadataValue.path(str(manifest_path)),
        "manifest_layers": dg.MetadataValue.json([e["layer"] for e in manifest["layers"]]),
        "preview": png_markdown(_preview_png(fmap.coords, density_values, f"{model} L{layer} (x, y)"),
                                "feature map"),
    })
