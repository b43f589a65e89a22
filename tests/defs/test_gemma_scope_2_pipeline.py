"""``analyze_sae`` on the packaged catalog's ``gemma-3-270m@gemmascope-2-res-16k`` as a researcher's machine runs it:
the model and Gemma Scope 2's layer-12 SAE by their hub ids (a hub-shaped server on 127.0.0.1), Neuronpedia's
export of ``gemma-3-270m/12-gemmascope-2-res-16k`` (a Neuronpedia-shaped one): explanations, Neuronpedia's
explanations as label candidates, and SFAL on them. Tiny: a 64-latent SAE, 3k tokens scanned."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from sae_assets.defs.partitions import partition_key, register_models
from tests.defs.helpers import TINY_EVALS, TINY_SCAN, run_platform_job
from tests.gemma_scope_files import publish_model, random_params, write_gemma_scope_sae
from tests.hub_server import HubServer, hub_endpoint
from tests.neuronpedia_server import NeuronpediaServer, NeuronpediaSource, source_export

MODEL, LAYER, D_SAE = "gemma-3-270m@gemmascope-2-res-16k", 12, 64
EXPLAINED = {3: "dates and years", 7: "the word 'the'", 21: "closing brackets in code", 40: "names of cities"}
RUN_CONFIG = {"ops": {
    "activation_scan": {"config": TINY_SCAN},
    "sae_evals": {"config": TINY_EVALS},
    "feature_labels": {"config": {"max_features": 12, "use_llm": False, "n_shown": 2}},
    "feature_clusters": {"config": {"n_neighbors": 5, "min_samples": 2, "pca_components": None}},
    "optimized_prompts": {"config": {"max_features": 1, "max_steps": 2, "batch_size": 8, "top_k": 8, "length": 4,
                                     "continuous_steps": 2, "restarts": 0}},
}}


@pytest.mark.slow
def test_analyze_sae_on_gemma_scope_2_by_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = random_params(D_SAE, seed=12)
    write_gemma_scope_sae(tmp_path / "hub", LAYER, params)
    publish_model(tmp_path / "hub")
    source = NeuronpediaSource("gemma-3-270m", f"{LAYER}-gemmascope-2-res-16k",
                               {i: [(text, "gpt-4o-mini")] for i, text in EXPLAINED.items()})
    monkeypatch.delenv("SAE_ASSETS_CATALOG", raising=False)  # the packaged catalog, its real ids
    monkeypatch.setenv("SAE_ASSETS_SAE_DROP", str(tmp_path / "drop"))
    monkeypatch.setenv("SAE_ASSETS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("SAE_ASSETS_BUDGET", "cpu")
    monkeypatch.setenv("SAE_ASSETS_MIN_EXPLAINED_VARIANCE", "-inf")  # random weights
    with (HubServer(tmp_path / "hub") as hub, hub_endpoint(hub.url, tmp_path / "hf-home"),
          NeuronpediaServer(source_export(source)) as neuronpedia, dg.instance_for_test() as instance):
        monkeypatch.setenv("NEURONPEDIA_S3_URL", neuronpedia.url)
        monkeypatch.setenv("NEURONPEDIA_API_URL", neuronpedia.url)
        register_models(instance, [MODEL])
        result = run_platform_job(instance, "analyze_sae", partition_key(MODEL, LAYER), RUN_CONFIG)
        assert result.success, [e.message for e in result.all_events if e.is_step_failure]
        fetched = {path.split("/resolve/")[-1].split("/", 1)[1] for _, path, _ in hub.requests if "/resolve/" in path}
        assert {"resid_post/layer_12_width_16k_l0_medium/params.safetensors", "model.safetensors"} <= fetched
    from sae_assets.resources import language_model

    language_model._CACHE.clear()  # the hub-loaded model: other tests of this process cannot reach its hub
    lake = tmp_path / "lake"
    decoder = pl.read_delta(str(lake / "sae_decoder")).sort("feature")
    assert decoder.height == D_SAE
    np.testing.assert_array_equal(np.array(decoder["decoder"].to_list(), dtype=np.float32), params["w_dec"].numpy())
    explanations = pl.read_delta(str(lake / "explanations")).sort("feature")
    assert explanations["feature"].to_list() == sorted(EXPLAINED) and set(explanations["source"]) == {"neuronpedia"}
    labels = pl.read_delta(str(lake / "feature_labels"))
    candidates = labels.filter(pl.col("label_explanation").is_not_null())
    assert set(candidates["feature"].to_list()) <= set(EXPLAINED) and candidates.height >= 1
    assert candidates["score_explanation"].is_not_null().any()  # scored where held-out windows exist
    scores = pl.read_delta(str(lake / "alignment_scores"))
    assert scores.height == D_SAE and scores.filter(pl.col("has_explanation"))["feature"].sort().to_list() == sorted(
        EXPLAINED)
    assert scores["ndcg"].is_between(0, 1).all()
    evals = pl.read_delta(str(lake / "sae_evals")).row(0, named=True)  # random weights, said as such
    assert evals["hook_name"] == f"blocks.{LAYER}.hook_resid_post" and evals["d_sae"] == D_SAE
    assert evals["ce_loss_with_sae"] > evals["ce_loss_without_sae"] and evals["ce_loss_score"] < 0.5, evals
