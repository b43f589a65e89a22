"""An upstream Delta table damaged under a downstream asset: the run fails before it writes, with one LakeReadError
naming the table, the partition and the asset to re-materialize; what the downstream asset stored is kept."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from deltalake import DeltaTable

from sae_assets.defs.assets.alignment_scores import alignment_scores
from sae_assets.defs.assets.explanations import explanations
from sae_assets.defs.partitions import partition_key, register_models
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from tests.defs.helpers import failure_text
from tests.defs.test_feature_clusters import MODEL, _run, _write_scan_tables

GEMMA = "gemma-2-2b@gemmascope-res-16k"
CLUSTERS = {"method": "dbscan", "eps": 1.0, "min_samples": 4, "n_neighbors": 10}


def _truncate(lake_root: str, table: str, layer: int) -> Path:
    (path,) = Path(lake_root, table).glob(f"model=*/layer={layer}/*.parquet")
    path.write_bytes(path.read_bytes()[:200])
    return path


def _lake_read_error(result: dg.ExecuteInProcessResult) -> str:
    text = failure_text(result)
    line = next(x for x in text.splitlines() if x.startswith("sae_assets.storage.read_check.LakeReadError: "))
    return line.removeprefix("sae_assets.storage.read_check.LakeReadError: ")


def test_feature_clusters_over_a_truncated_feature_stats_keeps_its_partition(test_catalog: Path,
                                                                             lake_root: str) -> None:
    lake = LakeResource(root=lake_root)
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        _write_scan_tables(lake, 1)
        stored = pl.DataFrame({"feature": pl.Series([0, 1], dtype=pl.Int32), "cluster": [0, -1]})
        version = lake.write_partition("feature_clusters", stored, MODEL, 1).version  # an earlier result

        damaged = _truncate(lake_root, "feature_stats", 1)
        message = _lake_read_error(_run(instance, lake, 1, **CLUSTERS))
        assert message.startswith(f"Cannot read the Delta table feature_stats ({lake_root}/feature_stats) for "
                                  f"partition 1|{MODEL}: its data file {damaged} is 200 bytes where the table's log "
                                  "recorded ")
        assert message.endswith("Re-materialize activation_scan (it writes feature_stats, activation_examples, "
                                f"feature_profiles and cooccurrence together) for partition 1|{MODEL}, then run this "
                                "step again.")
        assert DeltaTable(f"{lake_root}/feature_clusters").version() == version  # nothing written
        assert lake.read_partition("feature_clusters", MODEL, 1).drop("model", "layer").equals(stored)
        _write_scan_tables(lake, 1)  # the remedy the message names
        assert lake.read_partition("feature_stats", MODEL, 1).height == 75


def test_explanations_over_a_deleted_neuronpedia_file_and_alignment_scores_over_truncated_cooccurrence(
        test_catalog: Path, lake_root: str) -> None:
    lake = LakeResource(root=lake_root)
    n = 12
    features = pl.Series(range(n), dtype=pl.Int32)
    lake.write_partition("neuronpedia_explanations", pl.DataFrame({
        "feature": features, "description": [f"feature {i}" for i in range(n)], "explanation_type": ["t"] * n,
        "explainer_model": ["m"] * n, "created_at": [""] * n}), GEMMA, 12)
    lake.write_partition("sae_decoder", pl.DataFrame({  # the SAE's width: its decoder rows
        "feature": features, "decoder": pl.Series([[0.5] * 4] * n, dtype=pl.List(pl.Float32))}), GEMMA, 12)
    lake.write_partition("cooccurrence", pl.DataFrame({
        "feature": features, "marginal": pl.Series([2] * n, dtype=pl.Int32),
        "partners": pl.Series([[(i + 1) % n] for i in range(n)], dtype=pl.List(pl.Int32)),
        "counts": pl.Series([[1]] * n, dtype=pl.List(pl.Int32)), "n_windows": pl.Series([4] * n, dtype=pl.Int32)}),
        GEMMA, 12)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    lake.write_partition("explanation_embeddings", pl.DataFrame({
        "feature": features, "embedding_model": ["e"] * n,
        "embedding": pl.Series((vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist(),
                               dtype=pl.List(pl.Float32))}), GEMMA, 12)
    resources = {"lake": lake, "device": DeviceResource(device="cpu")}
    key = partition_key(GEMMA, 12)
    with dg.instance_for_test() as instance:
        register_models(instance, [GEMMA])
        assert dg.materialize([explanations, alignment_scores], partition_key=key, instance=instance,
                              resources=resources).success
        versions = {t: DeltaTable(f"{lake_root}/{t}").version() for t in ("explanations", "alignment_scores")}

        (gone,) = Path(lake_root, "neuronpedia_explanations").glob("model=*/layer=12/*.parquet")
        gone.unlink()
        message = _lake_read_error(dg.materialize([explanations], partition_key=key, instance=instance,
                                                  resources=resources, raise_on_error=False))
        assert message == (f"Cannot read the Delta table neuronpedia_explanations ({lake_root}/"
                           f"neuronpedia_explanations) for partition 12|{GEMMA}: its data file {gone} is missing. "
                           "Re-materialize "
                           f"neuronpedia_explanations for partition 12|{GEMMA}, then run this step again.")

        damaged = _truncate(lake_root, "cooccurrence", 12)
        message = _lake_read_error(dg.materialize([alignment_scores], partition_key=key, instance=instance,
                                                  resources=resources, raise_on_error=False))
        assert message.startswith(f"Cannot read the Delta table cooccurrence ({lake_root}/cooccurrence) for partition "
                                  f"12|{GEMMA}: its data file {damaged} is 200 bytes where the table's log recorded ")
        assert "Re-materialize activation_scan (it writes feature_stats" in message
        assert {t: DeltaTable(f"{lake_root}/{t}").version() for t in versions} == versions  # nothing written
        assert pl.read_delta(f"{lake_root}/alignment_scores").height == n
