"""Materialize activation_scan for a real partition (tiny SAE, tiny budget) and its bad inputs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch
from deltalake import DeltaTable

from sae_assets.catalog import load_catalog
from sae_assets.core.scan.cooccurrence import dense_counts
from sae_assets.defs.assets import activation_scan as scan_asset
from sae_assets.defs.assets.activation_scan import activation_scan
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.partitions import register_models
from tests.builders import save_topk_sae
from tests.defs.helpers import TINY_SCAN, failure_text, lake_tables, materialize

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m@test-res"


@pytest.fixture
def instance(test_catalog: Path) -> dg.DagsterInstance:
    with dg.instance_for_test() as inst:
        register_models(inst, [MODEL, "smollm2-135m@bad-hook"])
        yield inst


def test_scan_writes_four_consistent_tables(instance, lake_root: str, smollm2,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    result = materialize(instance, lake_root, MODEL, 3, assets=(trained_sae, sae_decoder, activation_scan))
    assert result.success
    meta = {m.asset_key.to_user_string(): m.metadata
            for m in result.asset_materializations_for_node("activation_scan")}
    assert set(meta) == {"feature_stats", "activation_examples", "cooccurrence", "feature_profiles"}
    stats = pl.read_delta(f"{lake_root}/feature_stats")
    assert stats.height == 256 and stats.select("model", "layer").unique().rows() == [(MODEL, "3")]
    assert stats["density"].is_between(0, 1).all() and (stats["activation_entropy"] >= 0).all()
    tokens = meta["feature_stats"]["tokens_scanned"].value
    assert 2500 < tokens <= 3000 + 128
    assert stats["n_tokens_active"].sum() == pytest.approx(meta["feature_stats"]["l0"].value * tokens)
    assert "data:image/png" in meta["feature_stats"]["density_histogram"].value

    examples = pl.read_delta(f"{lake_root}/activation_examples")
    assert set(examples["kind"].unique()) == {"top", "quantile", "random"}
    top = examples.filter(pl.col("kind") == "top")
    joined = top.filter(pl.col("rank") == 0).join(stats, on="feature")
    assert (joined["activation"] - joined["max_activation"]).abs().max() < 1e-4  # top-1 is the max
    assert all(len(t) == len(a) <= 9 for t, a in zip(examples["tokens"], examples["token_activations"], strict=True))
    assert "**" in meta["activation_examples"]["preview"].value

    cooc = pl.read_delta(f"{lake_root}/cooccurrence").sort("feature")
    n_windows = meta["cooccurrence"]["n_windows"].value
    assert cooc.height == 256 and cooc["feature"].to_list() == list(range(256))
    assert n_windows > 0 and set(cooc["n_windows"]) == {n_windows} and cooc["marginal"].max() <= n_windows
    counts = dense_counts(cooc, 256)  # one row per feature, every pair in both of its features' rows
    assert torch.equal(counts, counts.T) and (counts <= counts.diagonal().unsqueeze(0)).all()
    assert counts.diagonal().tolist() == cooc["marginal"].to_list()
    assert meta["cooccurrence"]["co_occurring_pairs"].value == int(torch.triu(counts, 1).count_nonzero())

    profiles = pl.read_delta(f"{lake_root}/feature_profiles").sort("feature")
    n_docs = meta["feature_profiles"]["profile_documents"].value
    assert profiles.height == 256 and 0 < n_docs <= 1024 and set(profiles["profile"].list.len()) == {n_docs}
    mass = profiles["profile"].list.sum().to_numpy()
    assert ((mass > 0) <= (stats.sort("feature")["n_tokens_active"].to_numpy() > 0)).all()

    # Bad input: a window longer than every document fails and leaves the tables as they were.
    versions = {t: DeltaTable(f"{lake_root}/{t}").version() for t in ("feature_stats", "cooccurrence")}
    bad = materialize(instance, lake_root, MODEL, 3, assets=(activation_scan,), scan={**TINY_SCAN, "window": 500})
    assert "shorter than 500 tokens" in failure_text(bad)
    assert {t: DeltaTable(f"{lake_root}/{t}").version() for t in versions} == versions

    # A width that would not fit the memory left fails before the pass, says what to lower, writes nothing.
    monkeypatch.setattr(scan_asset, "free_bytes", lambda device: 3 * 1024 * 1024)
    bad = materialize(instance, lake_root, MODEL, 3, assets=(activation_scan,))
    assert "needs about" in failure_text(bad) and "lower batch_tokens" in failure_text(bad)
    assert {t: DeltaTable(f"{lake_root}/{t}").version() for t in versions} == versions


def test_hook_missing_from_the_model(instance, lake_root: str, smollm2) -> None:
    save_topk_sae(load_catalog().entry("smollm2-135m@bad-hook").sae_path(1), d_in=576, d_sae=32)
    result = materialize(instance, lake_root, "smollm2-135m@bad-hook", 1, assets=(activation_scan,))
    assert "Hook 'blocks.1.hook_nope' does not exist" in failure_text(result)
    assert lake_tables(lake_root) == []
