"""explanations (Neuronpedia loopback and own labels) -> explanation_embeddings -> alignment_scores."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from sae_assets.defs.assets.activation_scan import activation_scan
from sae_assets.defs.assets.alignment_scores import alignment_scores
from sae_assets.defs.assets.explanation_embeddings import explanation_embeddings
from sae_assets.defs.assets.explanations import explanations
from sae_assets.defs.assets.feature_labels import feature_labels
from sae_assets.defs.assets.neuronpedia_explanations import neuronpedia_explanations
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.partitions import register_models
from sae_assets.resources.neuronpedia import NeuronpediaResource
from tests.defs.helpers import failure_text, lake_tables, materialize
from tests.neuronpedia_server import NeuronpediaServer

GEMMA = "gemma-2-2b@gemmascope-res-16k"
PREFIX = "v1/gemma-2-2b/12-gemmascope-res-16k/explanations/"


def _rec(index, description, model="gpt-4o-mini"):
    return {"modelId": "gemma-2-2b", "layer": "12-gemmascope-res-16k", "index": index, "description": description,
            "typeName": "oai_token-act-pair", "explanationModelName": model, "authorId": "a"}


def test_neuronpedia_explanations_and_a_corrupt_batch(test_catalog: Path, lake_root: str) -> None:
    batches = {f"{PREFIX}batch-0.jsonl.gz": [_rec("0", "zero"), _rec(1, "one"), _rec("1", "one again", "o1")],
               f"{PREFIX}batch-1.jsonl.gz": [_rec("2", "two")]}
    with dg.instance_for_test() as instance, NeuronpediaServer(batches, faults={"/": [429]}) as server:
        register_models(instance, [GEMMA])
        np_resource = NeuronpediaResource(s3_url=server.url, api_url=server.url, backoff_s=0.01)
        ok = materialize(instance, lake_root, GEMMA, 12, assets=(neuronpedia_explanations, explanations),
                         neuronpedia=np_resource, extra_ops={"explanations": {"config": {"preferred_models": ["o1"]}}})
        assert ok.success
        raw = pl.read_delta(f"{lake_root}/neuronpedia_explanations")  # every record, as published
        assert sorted(raw["description"].to_list()) == ["one", "one again", "two", "zero"]
        table = pl.read_delta(f"{lake_root}/explanations").sort("feature")
        assert table["description"].to_list() == ["zero", "one again", "two"]
        assert table["n_alternatives"].to_list() == [0, 1, 0] and set(table["source"]) == {"neuronpedia"}
        meta = ok.asset_materializations_for_node("neuronpedia_explanations")[0].metadata
        assert meta["records"].value == 4 and meta["features_explained"].value == 3
        version = meta["delta_table_version"].value

        server.files[f"{PREFIX}batch-1.jsonl.gz"] = gzip.compress(b'{"index": "5", "description": "x"}\n' * 50)[:40]
        bad = materialize(instance, lake_root, GEMMA, 12, assets=(neuronpedia_explanations,), neuronpedia=np_resource)
        assert "truncated or not gzip" in failure_text(bad) and "Nothing was written" in failure_text(bad)
        assert pl.read_delta(f"{lake_root}/neuronpedia_explanations").height == 4
        from deltalake import DeltaTable
        assert DeltaTable(f"{lake_root}/neuronpedia_explanations").version() == version


def test_unreachable_neuronpedia_writes_nothing(test_catalog: Path, lake_root: str) -> None:
    with dg.instance_for_test() as instance:
        register_models(instance, [GEMMA])
        result = materialize(instance, lake_root, GEMMA, 3, assets=(neuronpedia_explanations,))
        assert "failed after 1 attempts" in failure_text(result)
        assert lake_tables(lake_root) == []
        unread = materialize(instance, lake_root, GEMMA, 3, assets=(explanations,))
        assert (f"explanations {GEMMA} layer 3: no neuronpedia_explanations rows for partition 3|{GEMMA} (there "
                "is no neuronpedia_explanations table); materialize neuronpedia_explanations first, or use source "
                "'labels'.") in failure_text(unread)


def test_a_model_without_neuronpedia_ids_has_no_neuronpedia_explanations(test_catalog: Path, lake_root: str) -> None:
    model = "smollm2-135m@test-res"
    with dg.instance_for_test() as instance:
        register_models(instance, [model])
        result = materialize(instance, lake_root, model, 1, assets=(neuronpedia_explanations,))
        assert result.success and pl.read_delta(f"{lake_root}/neuronpedia_explanations").is_empty()
        meta = result.asset_materializations_for_node("neuronpedia_explanations")[0].metadata
        assert "has no Neuronpedia ids in the catalog" in meta["origin"].value
        forced = materialize(instance, lake_root, model, 1, assets=(explanations,),
                             extra_ops={"explanations": {"config": {"source": "neuronpedia"}}})
        assert "has no Neuronpedia ids in the catalog; use source 'labels'" in failure_text(forced)


@pytest.mark.slow
def test_sfal_chain_on_the_platform_labels(test_catalog: Path, lake_root: str, smollm2) -> None:
    model = "smollm2-135m@test-res"
    with dg.instance_for_test() as instance:
        register_models(instance, [model])
        chain = (trained_sae, sae_decoder, activation_scan, feature_labels, explanations, explanation_embeddings,
                 alignment_scores)
        result = materialize(instance, lake_root, model, 1, assets=chain, labels={"max_features": 6})
        assert result.success
        expl = pl.read_delta(f"{lake_root}/explanations")
        assert expl.height == 6 and set(expl["source"]) == {"labels"}
        emb = pl.read_delta(f"{lake_root}/explanation_embeddings")
        vectors = emb["embedding"].list.to_array(384).to_numpy()
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
        scores = pl.read_delta(f"{lake_root}/alignment_scores")
        assert scores.height == 256 and scores["has_explanation"].sum() == 6
        assert scores["ndcg"].is_between(0, 1.0000001).all()
        meta = result.asset_materializations_for_node("alignment_scores")[0].metadata
        assert meta["top_n"].value == 255 and 0 <= meta["mean_ndcg"].value <= 1


def test_alignment_report_across_layers(test_catalog: Path, lake_root: str) -> None:
    from sae_assets.defs.assets.alignment_report import REPORT_FILE, alignment_report
    from sae_assets.resources.lake import LakeResource

    lake = LakeResource(root=lake_root)
    with dg.instance_for_test() as instance:
        register_models(instance, [GEMMA])
        missing = dg.materialize([alignment_report], partition_key=GEMMA, instance=instance,
                                 resources={"lake": lake}, raise_on_error=False)
        assert (f"alignment_report {GEMMA}: no alignment_scores rows for any layer of {GEMMA} (there is no "
                "alignment_scores table); materialize alignment_scores first.") in failure_text(missing)
        for layer, values in (("12", [0.2, 0.4, 0.9]), ("3", [0.1, 0.1, 0.4])):
            lake.write_partition("alignment_scores", pl.concat([pl.DataFrame({
                "feature": pl.Series([0, 1, 2], dtype=pl.Int32), "embedding_model": [name] * 3,
                "ndcg": [v + shift for v in values], "has_explanation": [True, False, True]})
                for name, shift in (("all-MiniLM-L6-v2", 0.0), ("other", 0.05))]), GEMMA, layer)
        lake.write_partition("alignment_scores", pl.DataFrame({  # another model's layer stays out of this report
            "feature": pl.Series([0], dtype=pl.Int32), "embedding_model": ["x"], "ndcg": [1.0],
            "has_explanation": [True]}), "other@model", 3)
        result = dg.materialize([alignment_report], partition_key=GEMMA, instance=instance,
                                resources={"lake": lake})
    report = pl.read_delta(f"{lake_root}/alignment_report")  # a Delta read has no row order across partitions
    assert sorted(report["layer"].to_list()) == ["12", "12", "3", "3"]
    row = report.filter((pl.col("layer") == "12") & (pl.col("embedding_model") == "other")).row(0, named=True)
    assert row["mean_ndcg"] == pytest.approx(0.55) and row["median_ndcg"] == pytest.approx(0.45)
    assert (row["n_features"], row["n_explained"], row["model"]) == (3, 2, GEMMA)
    meta = result.asset_materializations_for_node("alignment_report")[0].metadata
    csv = pl.read_csv(meta["csv"].value)
    assert Path(meta["csv"].value).name == REPORT_FILE and csv.height == 4 and set(csv["model"]) == {GEMMA}
    assert csv["layer"].to_list() == [3, 3, 12, 12]  # the export is in numeric layer order
    assert meta["layers"].value == 2 and "data:image/png;base64" in meta["mean_ndcg_by_layer"].value


def test_malformed_neuronpedia_records_are_skipped_up_to_a_fraction(test_catalog: Path, lake_root: str) -> None:
    import logging

    good = [_rec(i, f"feature {i}") for i in range(150)]
    odd = [*good[:100], {**_rec(100, "x"), "description": 42}, *good[101:]]  # 1 of 150: under 1%, skipped
    batches = {f"{PREFIX}batch-0.jsonl.gz": good[:50], f"{PREFIX}batch-1.jsonl.gz": odd[50:]}
    with dg.instance_for_test() as instance, NeuronpediaServer(batches) as server:
        register_models(instance, [GEMMA])
        np_resource = NeuronpediaResource(s3_url=server.url, api_url=server.url, backoff_s=0.01)
        ok = materialize(instance, lake_root, GEMMA, 12, assets=(neuronpedia_explanations, explanations),
                         neuronpedia=np_resource)
        assert ok.success
        meta = ok.asset_materializations_for_node("neuronpedia_explanations")[0].metadata
        assert (meta["records"].value, meta["records_malformed_skipped"].value) == (149, 1)
        assert "batch-1.jsonl.gz line 51: 'description' of feature 100 is a number (42), not text" in \
            meta["malformed_examples"].value
        warnings = [e.user_message for e in instance.all_logs(ok.run_id) if e.level == logging.WARNING]
        assert any("skipped 1 of 150 records (0.67%) malformed: 'description' is a number (1)" in w for w in warnings)
        assert 100 not in pl.read_delta(f"{lake_root}/explanations")["feature"].to_list()
        version = meta["delta_table_version"].value

        worse = [*odd[50:60], {**_rec(160, "x"), "description": None}, {**_rec(161, "x"), "description": ["a"]},
                 {**_rec(162, "x"), "description": {"text": "b"}}]
        lines = [json.dumps(r) for r in worse] + ['{"index": "163", "description": "cut sh']  # line 14: not JSON
        server.files[f"{PREFIX}batch-1.jsonl.gz"] = gzip.compress("\n".join(lines).encode())
        bad = materialize(instance, lake_root, GEMMA, 12, assets=(neuronpedia_explanations,), neuronpedia=np_resource)
        text = failure_text(bad)
        assert ("4 of 64 records (6.25%) malformed: 'description' is null (1), 'description' is a list (1), "
                "'description' is an object (1), a line that is not a JSON object (1); e.g. "
                f"{PREFIX}batch-1.jsonl.gz line 11: 'description' of feature 160 "
                "is null, not text. That is more than max_malformed_fraction = 0.01 allows") in text
        assert "Nothing was written." in text
        from deltalake import DeltaTable
        assert DeltaTable(f"{lake_root}/neuronpedia_explanations").version() == version  # the old partition stays
        assert pl.read_delta(f"{lake_root}/neuronpedia_explanations").height == 149
        lenient = materialize(instance, lake_root, GEMMA, 12, assets=(neuronpedia_explanations,),
                              neuronpedia=np_resource,
                              extra_ops={"neuronpedia_explanations": {"config": {"max_malformed_fraction": 0.1}}})
        lenient_meta = lenient.asset_materializations_for_node("neuronpedia_explanations")[0].metadata
        assert lenient.success and lenient_meta["records_malformed_skipped"].value == 4
        assert f"{PREFIX}batch-1.jsonl.gz line 14: the line is not JSON" in lenient_meta["malformed_examples"].value
