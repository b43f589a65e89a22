"""feature_labels on a real partition: local SmolLM2, an OpenAI-compatible loopback server, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch
from deltalake import DeltaTable

from sae_assets.core.common.precision import compute_dtype, precision_name
from sae_assets.defs.assets.activation_scan import activation_scan
from sae_assets.defs.assets.feature_labels import feature_labels
from sae_assets.defs.assets.neuronpedia_explanations import RECORD_SCHEMA
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.partitions import register_models
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.labeller import LabellerResource
from sae_assets.resources.lake import LakeResource
from tests.chat_server import ChatServer
from tests.defs.helpers import failure_text, materialize

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m@test-res"


def _openai(url: str) -> LabellerResource:
    return LabellerResource(backend="openai", base_url=url, model="served", retries=1, backoff_s=0.01,
                            timeout_s=5, device=DeviceResource(device="cpu"))


def test_labels_scores_exports_and_bad_input(test_catalog: Path, lake_root: str, tmp_path: Path, smollm2) -> None:
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        first = materialize(instance, lake_root, MODEL, 1,
                            assets=(trained_sae, sae_decoder, activation_scan, feature_labels))
        assert first.success
        table = pl.read_delta(f"{lake_root}/feature_labels")
        assert table.height == 6
        assert table["labeller_model"].unique().to_list() == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
        labelled = table.filter(pl.col("error").is_null())
        assert labelled.height > 0
        assert all(0 < len(label.split()) <= 9 for label in labelled["label_llm"])
        _assert_best_candidate_shown(table)
        assert labelled["score"].drop_nulls().is_between(0, 1).all() and table["label_explanation"].null_count() == 6
        meta = first.asset_materializations_for_node("feature_labels")[0].metadata
        assert meta["budget_profile"].value == "cpu"  # no GPU here: SmolLM2 labels the first 32 features at most
        # the cpu profile's precision auto: bf16 autocast where this CPU multiplies bf16 natively, else float32
        assert meta["precision"].value == precision_name(compute_dtype("auto", torch.device("cpu")))
        exported = Path(meta["feature_labels_json"].value)
        rows = json.loads(exported.read_text())
        assert [r["feature_index"] for r in rows] == table.sort("feature")["feature"].to_list()
        lines = Path(meta["feature_examples_jsonl"].value).read_text().splitlines()
        assert len(lines) == 6 and "examples" in json.loads(lines[0])
        assert meta["wins_llm"].value + meta["wins_keywords"].value == labelled.height
        assert meta["wins_explanation"].value == 0 and 0 <= meta["mean_score_keywords"].value <= 1

        # Neuronpedia's explanations, where the partition has them, are scored as a third candidate.
        f0, f1 = table["feature"].to_list()[:2]
        LakeResource(root=lake_root).write_partition("neuronpedia_explanations", pl.DataFrame(
            {"feature": [f0, f0, f1], "description": ["numbers and dates", "  ", "words about places"],
             "explanation_type": ["oai_token-act-pair"] * 3, "explainer_model": ["gpt-4o-mini"] * 3,
             "created_at": [""] * 3}, schema=RECORD_SCHEMA), MODEL, 1)
        with_np = materialize(instance, lake_root, MODEL, 1, assets=(feature_labels,),
                              labels={"max_features": 6, "use_llm": False})
        assert with_np.success
        table = pl.read_delta(f"{lake_root}/feature_labels").sort("feature")
        _assert_best_candidate_shown(table)
        explained = table.filter(pl.col("label_explanation").is_not_null())
        assert dict(explained.select("feature", "label_explanation").iter_rows()) == {
            f0: "numbers and dates", f1: "words about places"}  # the blank one is no candidate
        assert explained["score_explanation"].is_between(0, 1).all()
        meta = with_np.asset_materializations_for_node("feature_labels")[0].metadata
        assert meta["wins_llm"].value == 0 and meta["wins_explanation"].value == (table["label_source"] ==
                                                                                  "explanation").sum()
        assert 0 <= meta["mean_score_explanation"].value <= 1

        # The seed's JSON selection form, labelled through an OpenAI-compatible endpoint.
        features = table["feature"].to_list()[:3]
        selection = tmp_path / "selection.json"
        selection.write_text(json.dumps({"feature_indices": features, "scores": [0.9, 0.5, 0.1]}))
        server = ChatServer([])
        try:
            second = materialize(instance, lake_root, MODEL, 1, assets=(feature_labels,),
                                 labels={"features_file": str(selection), "llm_detection": True,
                                         "llm_max_features": 2},  # the third keeps its keyword label
                                 labeller=_openai(server.url))
        finally:
            server.close()
        assert second.success
        table = pl.read_delta(f"{lake_root}/feature_labels").sort("feature")
        assert table["feature"].to_list() == sorted(features)
        assert table["label_llm"].drop_nulls().str.starts_with("echo").all() and table["label_llm"].count() == 2
        keyword_only = table.filter(pl.col("label_source") == "keywords")
        assert keyword_only["feature"].to_list() == [features[2]]
        assert keyword_only["label"].to_list() == keyword_only["label_keywords"].to_list()
        assert table["labeller_model"].unique().to_list() == ["served"]
        assert sorted(table["selection_score"].to_list()) == [0.1, 0.5, 0.9]
        # the loopback judge never says yes or no: every window votes 0, so detection is exactly chance
        assert table["score_llm_detection"].drop_nulls().to_list() == [0.5] * table["score_llm_detection"].count()
        assert table["score_llm_detection"].count() > 0

        version = DeltaTable(f"{lake_root}/feature_labels").version()
        down = materialize(instance, lake_root, MODEL, 1, assets=(feature_labels,),
                           labeller=_openai("http://127.0.0.1:9/v1"))
        assert "Every LLM label call failed; nothing written" in failure_text(down)
        exports = sorted(exported.parent.iterdir())  # the previous exports stay, no temporary file is left
        assert [p.name for p in exports] == ["feature_examples.jsonl", "feature_labels.json"]
        outside = materialize(instance, lake_root, MODEL, 1, assets=(feature_labels,),
                              labels={"feature_indices": [3, 256, 9999]})
        assert "Feature indices outside the SAE (d_sae=256): [256, 9999]" in failure_text(outside)
        empty = materialize(instance, lake_root, MODEL, 1, assets=(feature_labels,), labels={"feature_indices": []})
        assert "The feature selection is empty" in failure_text(empty)
        assert DeltaTable(f"{lake_root}/feature_labels").version() == version  # nothing written by failures


def _assert_best_candidate_shown(table: pl.DataFrame) -> None:
    """Every row's label is the candidate its source names, with the highest score of its candidates."""
    for row in table.filter(pl.col("label").is_not_null()).iter_rows(named=True):
        assert row["label"] == row[f"label_{row['label_source']}"]
        scores = [row[f"score_{s}"] for s in ("llm", "keywords", "explanation") if row[f"label_{s}"]]
        finite = [s for s in scores if s is not None]
        assert row["score"] == (max(finite) if finite else None)


def test_labels_need_a_scan_first(test_catalog: Path, lake_root: str) -> None:
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        result = materialize(instance, lake_root, MODEL, 3, assets=(feature_labels,))
        assert "materialize activation_scan first" in failure_text(result)
