"""``neuronpedia_explanations`` -> ``explanations`` for layer 12 of the packaged catalog's
``gemma-3-270m@gemmascope-2-res-16k``, against Gemma Scope 2's export on the loopback Neuronpedia: only the lake and
Neuronpedia are given, so neither the language model nor the SAE is loaded (a missing resource fails the run)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from sae_assets.defs.assets.explanations import explanations
from sae_assets.defs.assets.neuronpedia_explanations import neuronpedia_explanations
from sae_assets.defs.partitions import partition_key, register_models
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.neuronpedia import NeuronpediaResource
from tests.neuronpedia_server import GEMMA_3_270M, NeuronpediaServer, source_export

MODEL, LAYER = "gemma-3-270m@gemmascope-2-res-16k", 12


def test_explanations_of_gemma_scope_2_from_neuronpedia(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAE_ASSETS_CATALOG", raising=False)  # the packaged catalog
    monkeypatch.setenv("SAE_ASSETS_SAE_DROP", str(tmp_path / "drop"))
    lake_root = str(tmp_path / "lake")
    with dg.instance_for_test() as instance, NeuronpediaServer(source_export(GEMMA_3_270M, batch_size=4)) as server:
        register_models(instance, [MODEL])
        result = dg.materialize(
            [neuronpedia_explanations, explanations], partition_key=partition_key(MODEL, LAYER), instance=instance,
            resources={"lake": LakeResource(root=lake_root),
                       "neuronpedia": NeuronpediaResource(s3_url=server.url, api_url=server.url, backoff_s=0.01)},
            run_config={"ops": {"explanations": {"config": {"preferred_models": ["claude-4-5-haiku"]}}}},
            raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_step_failure]
        prefix = "/v1/gemma-3-270m/12-gemmascope-2-res-16k/explanations/"
        assert [p for p in server.hits if p != "/"] == [f"{prefix}batch-0.jsonl.gz", f"{prefix}batch-1.jsonl.gz"]
    raw = pl.read_delta(f"{lake_root}/neuronpedia_explanations")
    assert raw.height == 6 and set(raw["model"]) == {MODEL} and set(raw["layer"].cast(pl.String)) == {"12"}
    table = pl.read_delta(f"{lake_root}/explanations").sort("feature")
    assert table["feature"].to_list() == [0, 2, 10, 511, 16383]
    assert table.filter(pl.col("feature") == 10)["description"].item() == "code: closing brackets"
    assert table["n_alternatives"].to_list() == [0, 0, 1, 0, 0] and set(table["source"]) == {"neuronpedia"}
    meta = result.asset_materializations_for_node("explanations")[0].metadata
    assert meta["origin"].value == "gemma-3-270m/12-gemmascope-2-res-16k" and meta["features_explained"].value == 5
    np_meta = result.asset_materializations_for_node("neuronpedia_explanations")[0].metadata
    assert np_meta["records"].value == 6 and np_meta["records_malformed_skipped"].value == 0
