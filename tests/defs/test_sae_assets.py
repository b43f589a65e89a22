"""Materialize the SAE assets for real partitions (tiny budgets) and prove bad input writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from sae_assets.catalog import CatalogError
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.partitions import MODEL_PARTITIONS_NAME, register_models
from sae_assets.resources.corpus import CorpusResource
from tests.defs.helpers import failure_text, lake_tables, materialize

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m@test-res"


@pytest.fixture
def instance(test_catalog: Path) -> dg.DagsterInstance:
    with dg.instance_for_test() as inst:
        register_models(inst, [MODEL, "smollm2-135m@wrong-width", "gemma-2-2b@gemmascope-res-16k"])
        yield inst


def test_train_then_publish_decoder(instance: dg.DagsterInstance, lake_root: str, smollm2) -> None:
    result = materialize(instance, lake_root, MODEL, 1)
    assert result.success
    trained = result.asset_materializations_for_node("trained_sae")[0].metadata
    assert trained["d_sae"].value == 256 and trained["d_in"].value == 576
    assert 0.0 < trained["explained_variance"].value <= 1.0
    assert trained["l0"].value == pytest.approx(8.0)
    assert "data:image/png;base64," in trained["feature_density"].value
    decoder_meta = result.asset_materializations_for_node("sae_decoder")[0].metadata
    assert decoder_meta["dagster/row_count"].value == 256
    assert decoder_meta["hook_name"].value == "blocks.1.hook_resid_post"

    table = pl.read_delta(f"{lake_root}/sae_decoder")
    assert table.height == 256 and table["decoder"].list.len().unique().to_list() == [576]
    assert table.select("model", "layer").unique().rows() == [(MODEL, "1")]
    row = pl.read_delta(f"{lake_root}/trained_sae").row(0, named=True)
    assert row["d_sae"] == 256 and row["training_tokens"] == 4096 and Path(row["sae_path"], "cfg.json").exists()

    # A second run of the same partition replaces it: same row count, a newer table version.
    again = materialize(instance, lake_root, MODEL, 1, assets=(sae_decoder,))
    assert again.success
    assert pl.read_delta(f"{lake_root}/sae_decoder").height == 256
    version = again.asset_materializations_for_node("sae_decoder")[0].metadata["delta_table_version"].value
    assert version > decoder_meta["delta_table_version"].value


def test_layer_without_sae_fails_at_once(instance: dg.DagsterInstance, lake_root: str) -> None:
    result = materialize(instance, lake_root, MODEL, 2)
    assert not result.success
    assert "'smollm2-135m@test-res' has no SAE at layer 2; layers with an SAE: 1, 3" in failure_text(result)
    assert lake_tables(lake_root) == []


def test_unknown_model_key(instance: dg.DagsterInstance, lake_root: str) -> None:
    with pytest.raises(CatalogError, match="Unknown model key 'gpt-9@x'"):
        register_models(instance, ["gpt-9@x"])
    instance.add_dynamic_partitions(MODEL_PARTITIONS_NAME, ["gpt-9@x"])  # e.g. removed from the catalog since
    result = materialize(instance, lake_root, "gpt-9@x", 1, assets=(sae_decoder,))
    assert "Unknown model key 'gpt-9@x'" in failure_text(result)
    assert lake_tables(lake_root) == []


def test_empty_corpus_writes_nothing(instance: dg.DagsterInstance, lake_root: str, tmp_path: Path,
                                     smollm2) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": " "}) + "\n")
    result = materialize(instance, lake_root, MODEL, 1, assets=(trained_sae,),
                         corpus=CorpusResource(jsonl_path=str(empty)))
    assert "has no non-empty text in column 'text'" in failure_text(result)
    assert lake_tables(lake_root) == []


def test_sae_with_wrong_width_writes_nothing(instance: dg.DagsterInstance, lake_root: str) -> None:
    from sae_assets.catalog import load_catalog
    from tests.builders import save_topk_sae

    save_topk_sae(load_catalog().entry("smollm2-135m@wrong-width").sae_path(1), d_in=64)
    result = materialize(instance, lake_root, "smollm2-135m@wrong-width", 1, assets=(sae_decoder,))
    assert "has d_in=64, but the model's hook 'blocks.1.hook_resid_post' is 576 wide" in failure_text(result)
    assert lake_tables(lake_root) == []


def test_unreachable_hub_writes_nothing(instance: dg.DagsterInstance, lake_root: str) -> None:
    result = materialize(instance, lake_root, "gemma-2-2b@gemmascope-res-16k", 12, assets=(sae_decoder,))
    assert "hub repo 'google/gemma-scope-2b-pt-res'" in failure_text(result)
    assert lake_tables(lake_root) == []


def test_training_a_pretrained_entry_is_refused(instance: dg.DagsterInstance, lake_root: str) -> None:
    result = materialize(instance, lake_root, "gemma-2-2b@gemmascope-res-16k", 3, assets=(trained_sae,))
    assert "is not trained by the platform" in failure_text(result)
    assert lake_tables(lake_root) == []
