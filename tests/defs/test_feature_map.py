"""feature_map on synthetic lake tables: positions, edges, labels, JSON export, and failures that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import torch

from sae_assets.core.sae.decoder import decoder_frame
from sae_assets.defs.assets.feature_map import feature_map
from sae_assets.defs.partitions import partition_key, register_models
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from tests.core.feature_map.test_knn import brute_force
from tests.defs.helpers import failure_text, lake_tables

MODEL = "smollm2-135m@test-res"
N, DIM = 60, 24
SCRIPT = "<script>alert(1)</script>"


def _decoder(n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, DIM))
    return (centers[np.arange(n) % 3] + 0.4 * rng.normal(size=(n, DIM))).astype(np.float32)


def _write_decoder(lake: LakeResource, layer: int, w_dec: np.ndarray) -> None:
    lake.write_partition("sae_decoder", decoder_frame(torch.from_numpy(w_dec)), MODEL, layer)


def _run(instance, lake, layer, **config):
    return dg.materialize([feature_map], partition_key=partition_key(MODEL, layer), instance=instance,
                          resources={"lake": lake, "device": DeviceResource(device="cpu")}, raise_on_error=False,
                          run_config={"ops": {"feature_map": {"config": config}}})


def test_map_edges_labels_and_json(test_catalog: Path, lake_root: str) -> None:
    lake = LakeResource(root=lake_root)
    w_dec = _decoder()
    _write_decoder(lake, 1, w_dec)
    feature = pl.Series(range(10), dtype=pl.Int32)
    lake.write_partition("explanations", pl.DataFrame({
        "feature": feature, "description": [SCRIPT] + [f"explained {i}" for i in range(1, 10)]}), MODEL, 1)
    labelled = [f"labelled {i}" for i in range(5, 15)]  # feature_labels' chosen labels
    lake.write_partition("feature_labels", pl.DataFrame({
        "feature": pl.Series(range(5, 15), dtype=pl.Int32), "label": labelled, "label_llm": ["llm"] * 10,
        "label_keywords": pl.Series([None] * 10, dtype=pl.String)}), MODEL, 1)
    density = np.linspace(1e-4, 1e-2, N)
    density[7] = 0.0
    lake.write_partition("feature_stats", pl.DataFrame({"feature": pl.Series(range(N), dtype=pl.Int32),
                                                        "density": density}), MODEL, 1)
    lake.write_partition("feature_clusters", pl.DataFrame({  # features 0-9 kept (clusters -1, 0, 1), 10 dropped
        "feature": pl.Series(range(11), dtype=pl.Int32), "kept": [True] * 10 + [False],
        "cluster": pl.Series([-1, 0, 1] * 3 + [0, 1], dtype=pl.Int32)}), MODEL, 1)
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        result = _run(instance, lake, 1, n_neighbors=10, k_edges=12, edge_threshold=0.3, precision=3)
        assert result.success

        nodes = pl.read_delta(f"{lake_root}/feature_map").sort("feature")
        assert nodes.height == N and nodes["x"].dtype == pl.Float32 and nodes["density"].dtype == pl.Float64
        labels = nodes["label"].to_list()
        assert labels[0] == SCRIPT and labels[5] == "labelled 5" and labels[12] == "labelled 12"  # the chosen
        # label, else (features never labelled) the explanation
        assert labels[20] is None and nodes["density"][7] == 0.0
        assert np.isfinite(nodes.select("x", "y", "z").to_numpy()).all()
        assert nodes["cluster"].to_list()[:12] == [-1, 0, 1] * 3 + [0, None, None]

        edges = pl.read_delta(f"{lake_root}/feature_map_edges").sort("source", "similarity", "target",
                                                                     descending=[False, True, False])
        ref_idx, ref_sims = brute_force(w_dec.astype(np.float64), 12)
        expected = sorted((i, int(j)) for i in range(N) for j, s in zip(ref_idx[i], ref_sims[i], strict=True)
                          if s >= 0.3)
        assert sorted(edges.select("source", "target").rows()) == expected

        export = Path(lake_root) / "exports" / "feature_map" / MODEL
        layer = json.loads((export / "layer-1.json").read_text())
        assert (export / "layer-1.json").stat().st_mode & 0o044 == 0o044  # readable by a web server
        assert layer["layer"] == 1 and layer["model"] == MODEL and len(layer["nodes"]) == N
        assert layer["nodes"][0]["label"] == SCRIPT and SCRIPT not in (export / "layer-1.json").read_text()
        assert len(layer["edges"]) == edges.height and set(layer["edges"][0]) == {"source", "target", "similarity"}
        assert all(round(c, 3) == c for c in layer["nodes"][3]["position"])
        assert [n["cluster"] for n in layer["nodes"][8:11]] == [1, 0, None]

        meta = result.asset_materializations_for_node("feature_map")[0].metadata
        assert meta["dagster/row_count"].value == N and meta["edges"].value == edges.height
        assert meta["mean_degree"].value == edges.height / N and meta["n_labelled"].value == 15
        assert meta["n_clustered"].value == 10
        assert meta["input_table_versions"].value == {  # lineage: the Delta versions read (each written once)
            "explanations": 0, "feature_clusters": 0, "feature_labels": 0, "feature_stats": 0, "sae_decoder": 0}
        assert meta["delta_table_version"].value == 0
        assert meta["json"].value == str(export / "layer-1.json") and "knn_seconds" in meta
        assert "data:image/png;base64" in meta["preview"].value

        _write_decoder(lake, 3, _decoder(seed=1))  # no labels, stats or explanations for layer 3
        third = _run(instance, lake, 3, gzip=True)
        assert third.success
        third_meta = third.asset_materializations_for_node("feature_map")[0].metadata
        assert third_meta["input_table_versions"].value["sae_decoder"] == 1  # layer 3's write made version 1
        assert third_meta["delta_table_version"].value == 1
        layer3 = pl.read_delta(f"{lake_root}/feature_map").filter(pl.col("layer") == "3")
        assert layer3.height == N and layer3["label"].null_count() == N and layer3["label"].dtype == pl.String
        manifest = json.loads((export / "manifest.json").read_text())
        assert [(e["layer"], e["file"], e["features"]) for e in manifest["layers"]] == [
            (1, "layer-1.json", N), (3, "layer-3.json.gz", N)]
        assert manifest["layers"][0]["edges"] == edges.height
        assert manifest["layers"][1]["bytes"] == (export / "layer-3.json.gz").stat().st_size


def test_bad_inputs_fail_and_write_nothing(test_catalog: Path, lake_root: str, tmp_path: Path) -> None:
    lake = LakeResource(root=lake_root)
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        assert "materialize sae_decoder first" in failure_text(_run(instance, lake, 1))
        w_dec = _decoder()
        w_dec[[4, 9], 2] = np.nan
        _write_decoder(lake, 1, w_dec)
        assert "decoder has NaN or Inf values in 2 of 60 rows" in failure_text(_run(instance, lake, 1))
        _write_decoder(lake, 1, _decoder(20))
        assert "layer has 20 features, fewer than k+1 = 26" in failure_text(_run(instance, lake, 1))
        _write_decoder(lake, 1, _decoder())
        blocked = tmp_path / "not-a-directory"
        blocked.write_text("")
        text = failure_text(_run(instance, LakeResource(root=lake_root, files_root=str(blocked)), 1))
        assert "cannot write the JSON export" in text
        assert lake_tables(lake_root) == ["sae_decoder"]
        assert not (Path(lake_root) / "exports").exists()
