"""One layer's feature map from its ``sae_decoder`` rows: the k-NN + UMAP layout, the node and edge tables (with
each feature's label, density and cluster where known) and the viewer's JSON payload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from sae_assets.core.common.list_columns import list_matrix
from sae_assets.core.common.progress import Report
from sae_assets.core.feature_map.layout import (
    FeatureMap,
    FeatureMapConfig,
    build_feature_map,
    edges_frame,
    layer_json,
    nodes_frame,
)


@dataclass(frozen=True)
class LayerMap:
    """The layout (``fmap``), the ``feature_map`` and ``feature_map_edges`` rows, the ``layer-N.json`` payload, and
    the decoder matrix's shape ``(features, d_in)``."""

    fmap: FeatureMap
    nodes: pl.DataFrame
    edges: pl.DataFrame
    payload: dict
    shape: tuple[int, int]


def layer_map(decoder: pl.DataFrame, cfg: FeatureMapConfig, *, model: str, layer: int,
              labels: Mapping[int, str], density: Mapping[int, float], clusters: Mapping[int, int],
              device: torch.device | str | None = None, report: Report | None = None) -> LayerMap:
    """The map of ``decoder`` (``feature``, ``decoder`` rows, by feature); ``labels``, ``density`` and ``clusters``
    by feature (a feature absent: null). Raises ValueError for NaN/Inf vectors or too few features."""
    vectors = list_matrix(decoder["decoder"], np.float32)
    features = decoder["feature"].to_numpy()
    fmap = build_feature_map(torch.from_numpy(vectors), cfg, device=device, report=report)
    ids = features.tolist()
    nodes = nodes_frame(features, fmap.coords, [labels.get(f) for f in ids], [density.get(f) for f in ids],
                        [clusters.get(f) for f in ids])
    edges = edges_frame(fmap.indices, fmap.sims, cfg.k_edges, cfg.edge_threshold, features)
    payload = layer_json(nodes, edges, cfg.precision, model=model, layer=layer)
    return LayerMap(fmap, nodes, edges, payload, (int(vectors.shape[0]), int(vectors.shape[1])))
