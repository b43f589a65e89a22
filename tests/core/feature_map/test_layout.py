"""Feature map core: edges, UMAP on a precomputed exact k-NN, JSON export, manifest, atomic writes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import umap.umap_

from sae_assets.core.common.atomic_file import stage_file
from sae_assets.core.feature_map.knn import exact_knn
from sae_assets.core.feature_map.layout import (
    FeatureMapConfig,
    build_feature_map,
    commit_layer,
    edges_frame,
    encode,
    layer_entry,
    layer_file_name,
    layer_json,
    nodes_frame,
    read_json,
    umap_knn,
    write_manifest,
)
from tests.core.feature_map.test_knn import brute_force, tied_vectors


def clustered(n: int = 60, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, dim))
    return (centers[np.arange(n) % 3] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def test_edges_match_brute_force() -> None:
    x = tied_vectors(45)
    idx, sims = exact_knn(x, 8, block=16)
    features = np.arange(45) + 100
    edges = edges_frame(idx.numpy(), sims.numpy(), 5, 0.25, features)
    assert edges.schema == pl.Schema({"source": pl.Int32, "target": pl.Int32, "similarity": pl.Float32})
    ref_idx, ref_sims = brute_force(x.astype(np.float64), 5)
    expected = [(i + 100, int(j) + 100, s) for i in range(45) for j, s in zip(ref_idx[i], ref_sims[i], strict=True)
                if s >= 0.25]
    assert [(s, t, pytest.approx(v)) for s, t, v in expected] == edges.rows()
    assert edges_frame(idx.numpy(), sims.numpy(), 5, 1.01).height == 0


def test_umap_on_precomputed_exact_knn_runs_no_neighbour_search(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_search(*args, **kwargs):
        raise AssertionError("UMAP ran its own neighbour search")

    monkeypatch.setattr(umap.umap_, "nearest_neighbors", no_search)
    monkeypatch.setattr(umap.umap_, "pairwise_distances", no_search)  # its path for fewer than 4,096 points
    cfg = FeatureMapConfig(n_neighbors=10, k_edges=12)
    fmap = build_feature_map(clustered(), cfg)
    assert fmap.coords.shape == (60, 3) and fmap.coords.dtype == np.float32 and np.isfinite(fmap.coords).all()
    assert fmap.indices.shape == (60, 12)
    # the clusters stay apart in 3-D: each point's nearest position is in its own cluster
    d = np.linalg.norm(fmap.coords[:, None] - fmap.coords[None], axis=2) + np.eye(60) * 1e9
    assert (d.argmin(1) % 3 == np.arange(60) % 3).mean() > 0.95
    again = build_feature_map(clustered(), cfg)
    np.testing.assert_array_equal(fmap.coords, again.coords)  # seeded


def test_umap_knn_puts_self_first() -> None:
    idx, dist = umap_knn(np.array([[1, 2, 3], [0, 2, 3], [1, 0, 3], [2, 1, 0]]),
                         np.array([[0.9, 0.5, 0.1]] * 4, dtype=np.float32), 3)
    assert idx.dtype == np.int32 and dist.dtype == np.float32
    assert idx[:, 0].tolist() == [0, 1, 2, 3] and idx[0].tolist() == [0, 1, 2]
    np.testing.assert_allclose(dist[0], [0.0, 0.1, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="needs 4 neighbours"):
        umap_knn(idx, dist, 5)


def test_config_validation() -> None:
    assert FeatureMapConfig(k_edges=5, n_neighbors=15).knn_k == 15
    with pytest.raises(ValueError, match="cosine"):
        FeatureMapConfig(metric="euclidean")
    with pytest.raises(ValueError, match="init must be"):
        FeatureMapConfig(init="tsne")
    with pytest.raises(ValueError, match="layer has 12 features"):
        build_feature_map(clustered(12), FeatureMapConfig())


def _frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    coords = np.array([[0.123456, -1.0, 2.5], [3.0, 4.00004, -0.00001]], dtype=np.float32)
    nodes = nodes_frame(np.array([0, 1]), coords, ["<script>alert(1)</script>", None], [1.234567e-5, None],
                        [3, None])
    edges = edges_frame(np.array([[1], [0]]), np.array([[0.876543], [0.876543]]), 1, 0.0)
    return nodes, edges


def test_layer_json_shape_and_precision() -> None:
    nodes, edges = _frames()
    assert nodes.schema["label"] == pl.String and nodes_frame(np.array([0]), np.zeros((1, 3))).schema["label"] == \
        pl.String
    payload = layer_json(nodes, edges, 3, model="m@x", layer=2)
    assert payload == {  # -0.00001 rounds to 0.0, not -0.0
        "layer": 2, "model": "m@x",
        "nodes": [{"id": 0, "position": [0.123, -1.0, 2.5], "label": "<script>alert(1)</script>", "density": 1.23e-5,
                   "cluster": 3},
                  {"id": 1, "position": [3.0, 4.0, 0.0], "label": None, "density": None, "cluster": None}],
        "edges": [{"source": 0, "target": 1, "similarity": 0.877}, {"source": 1, "target": 0, "similarity": 0.877}]}
    text = encode(payload, gzip=False).decode()
    assert "<" not in text and "\\u003cscript" in text  # safe inline in HTML ...
    assert json.loads(text) == payload  # ... and the same label once parsed
    assert json.loads(gzip.decompress(encode(payload, gzip=True))) == payload


def test_files_manifest_and_gzip(tmp_path: Path) -> None:
    nodes, edges = _frames()
    for layer, zipped in ((3, False), (1, True)):
        payload = layer_json(nodes, edges, 4, model="m", layer=layer)
        staged = stage_file(tmp_path / layer_file_name(layer, zipped), encode(payload, zipped))
        assert not staged.path.exists()  # nothing visible before the commit
        commit_layer(staged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer-1.json.gz", "layer-3.json"]
    assert read_json(tmp_path / "layer-1.json.gz")["layer"] == 1
    path, manifest = write_manifest(tmp_path, "m")
    assert json.loads(path.read_text()) == manifest
    assert manifest == {"model": "m", "layers": [
        {"layer": 1, "file": "layer-1.json.gz", "features": 2, "edges": 2,
         "bytes": (tmp_path / "layer-1.json.gz").stat().st_size},
        {"layer": 3, "file": "layer-3.json", "features": 2, "edges": 2,
         "bytes": (tmp_path / "layer-3.json").stat().st_size}]}
    # layer 3 again, gzipped: its plain file goes, the manifest follows
    payload = layer_json(nodes.head(1), edges.head(1), 4, model="m", layer=3)
    new = commit_layer(stage_file(tmp_path / layer_file_name(3, True), encode(payload, True)))
    _, manifest = write_manifest(tmp_path, "m", [layer_entry(new, payload)])
    assert [(e["file"], e["features"]) for e in manifest["layers"]] == [("layer-1.json.gz", 2), ("layer-3.json.gz", 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer-1.json.gz", "layer-3.json.gz", "manifest.json"]
