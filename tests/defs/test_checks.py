"""Asset checks: each rule flags the rows it should, on real lake tables, in a real run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import torch

from sae_assets.core.sae.decoder import decoder_frame
from sae_assets.core.scan.scan_identity import SCAN_TABLES
from sae_assets.definitions import defs
from sae_assets.defs.assets.feature_map import feature_map
from sae_assets.defs.checks import build_checks
from sae_assets.defs.partitions import partition_key, register_models
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource

MODEL = "smollm2-135m@test-res"
N = 40


def _ints(values) -> pl.Series:
    return pl.Series(values, dtype=pl.Int32)


def _write_tables(lake: LakeResource) -> None:
    rng = np.random.default_rng(0)
    lake.write_partition("sae_decoder", decoder_frame(torch.from_numpy(rng.normal(size=(N, 8)).astype(np.float32))),
                         MODEL, 1)
    density = np.full(N - 1, 0.01)
    density[4] = 1.5  # not a fraction; and one feature short of d_sae
    lake.write_partition("feature_stats", pl.DataFrame({
        "feature": _ints(range(N - 1)), "density": density, "max_activation": np.ones(N - 1),
        "activation_entropy": np.ones(N - 1)}), MODEL, 1)
    lake.write_partition("cooccurrence", pl.DataFrame({
        "feature": _ints([0, 1, 2, 3]), "marginal": _ints([5, 7, 2, 1]),
        "partners": pl.Series([[2], [2], [0, 1], [2, 1]], dtype=pl.List(pl.Int32)),
        "counts": pl.Series([[1], [2], [1, 2], [1, 1]], dtype=pl.List(pl.Int32)),
        "n_windows": [6, 6, 6, 6]}), MODEL, 1)  # marginal 7 > 6 windows; partners of 3 not ascending
    lake.write_partition("explanations", pl.DataFrame({
        "feature": _ints([0, 1, 2]), "description": ["dogs", "  ", "cats"]}), MODEL, 1)
    vectors = [[1.0, 0.0], [0.6, 0.8], [float("nan"), 0.0], [2.0, 0.0]]
    lake.write_partition("explanation_embeddings", pl.DataFrame({
        "feature": _ints(range(4)), "embedding_model": ["m"] * 4,
        "embedding": pl.Series(vectors, dtype=pl.List(pl.Float32))}), MODEL, 1)
    lake.write_partition("feature_labels", pl.DataFrame({  # 3: not the best score; 4: not its source's candidate
        "feature": _ints(range(5)), "label": ["dogs", "", None, "cats", "x"],
        "label_source": ["llm", "llm", None, "keywords", "explanation"],
        "score": [0.7, None, None, 0.5, 0.6], "label_llm": ["dogs", "", None, "feline", None],
        "score_llm": [0.7, None, None, 0.9, None], "label_keywords": ["dog", None, None, "cats", None],
        "score_keywords": [0.5, None, None, 0.5, None], "label_explanation": [None, None, None, None, "y"],
        "score_explanation": [None, None, None, None, 0.6],
        "error": [None, None, "timeout", None, None]}, schema_overrides={"label_explanation": pl.String,
                                                                          "score_explanation": pl.Float64}),
        MODEL, 1)


def test_rules_flag_bad_rows_and_pass_good_ones(test_catalog: Path, lake_root: str) -> None:
    lake = LakeResource(root=lake_root)
    _write_tables(lake)
    checks = build_checks()
    tables = {"sae_decoder", "feature_stats", "cooccurrence", "explanations", "explanation_embeddings",
              "feature_labels", "feature_map"}
    keys = [k for c in checks for k in c.check_keys if k.asset_key.to_user_string() in tables
            and k.name != "scan_explained_variance_floor"]
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        result = dg.materialize([feature_map, *checks], partition_key=partition_key(MODEL, 1), instance=instance,
                                resources={"lake": lake, "device": DeviceResource(device="cpu")},
                                selection=dg.AssetSelection.assets(feature_map) | dg.AssetSelection.checks(*keys),
                                run_config={"ops": {"feature_map": {"config": {"n_neighbors": 5, "k_edges": 5}}}})
        outcome = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    passed = {k: e.passed for k, e in outcome.items()}
    assert passed == {
        ("sae_decoder", "finite_decoder"): True,
        ("feature_stats", "density_in_unit_interval"): False,
        ("feature_stats", "one_row_per_feature"): False,
        ("cooccurrence", "valid_counts"): False,
        ("explanations", "descriptions_non_empty"): False,
        ("explanation_embeddings", "finite_unit_embeddings"): False,
        ("feature_labels", "labels_non_empty"): False,
        ("feature_labels", "label_is_best_candidate"): False,
        ("feature_map", "finite_positions"): True,
        ("feature_map", "edges_valid"): True,
        ("feature_map", "one_row_per_feature"): True,
    }
    bad_rows = {k: e.metadata["bad_rows"].value for k, e in outcome.items() if "bad_rows" in e.metadata}
    assert bad_rows[("feature_stats", "density_in_unit_interval")] == 1
    assert bad_rows[("cooccurrence", "valid_counts")] == 2
    assert bad_rows[("explanation_embeddings", "finite_unit_embeddings")] == 2  # NaN, and norm 2
    assert bad_rows[("feature_labels", "labels_non_empty")] == 1  # the error row is not a missing label
    assert bad_rows[("feature_labels", "label_is_best_candidate")] == 2
    assert outcome[("feature_stats", "one_row_per_feature")].metadata["d_sae"].value == N


def test_every_asset_has_a_partitioned_check() -> None:
    checked = {k.asset_key.to_user_string() for c in defs.asset_checks for k in c.check_keys}
    assert checked == {s.key.to_user_string() for s in defs.resolve_all_asset_specs()}
    blocking = {(k.asset_key.to_user_string(), k.name) for c in defs.asset_checks for k in c.check_keys
                if c.get_spec_for_check_key(k).blocking}
    assert blocking == {("trained_sae", "explained_variance_floor"), ("feature_stats", "scan_explained_variance_floor"),
                        *((table, "same_scan") for table in SCAN_TABLES)}
    assert all(c.partitions_def is not None for c in defs.asset_checks)
