"""logit_effects on a decoder table written directly: the packaged SmolLM2's unembedding, its checks, and
inputs that fail and write nothing."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from sae_assets.core.sae.decoder import decoder_frame
from sae_assets.defs.assets.logit_effects import logit_effects
from sae_assets.defs.checks import build_checks
from sae_assets.defs.partitions import partition_key, register_models
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.language_model import LanguageModelResource
from tests.defs.helpers import failure_text, lake_tables

MODEL = "smollm2-135m@test-res"
N = 64
THE = 260  # " the" in SmolLM2's vocabulary: its own unembedding direction ranks it first (checked below)


def _resources(lake: LakeResource) -> dict:
    device = DeviceResource(device="cpu", dtype="float32")
    return {"lake": lake, "device": device, "language_model": LanguageModelResource(device=device)}


def _run(instance: dg.DagsterInstance, lake: LakeResource, layer: int, with_checks: bool = False,
         **config: object) -> dg.ExecuteInProcessResult:
    checks = [c for c in build_checks() if {k.asset_key for k in c.check_keys} == {logit_effects.key}]
    return dg.materialize([logit_effects, *(checks if with_checks else [])], partition_key=partition_key(MODEL, layer),
                          instance=instance, resources=_resources(lake), raise_on_error=False,
                          run_config={"ops": {"logit_effects": {"config": config}}})


def _write_decoder(lake: LakeResource, layer: int, w_dec: np.ndarray) -> None:
    lake.write_partition("sae_decoder", decoder_frame(torch.from_numpy(w_dec)), MODEL, layer)


@pytest.mark.slow
def test_top_tokens_of_a_known_direction(test_catalog: Path, lake_root: str, smollm2) -> None:
    w_u = smollm2.unembedding().w_u  # [576, 49152]
    assert smollm2.token_strings([THE]) == [" the"]
    direction = (w_u[:, THE] / w_u[:, THE].norm()).numpy()
    w_dec = np.random.default_rng(0).normal(size=(N, 576)).astype(np.float32)
    w_dec[5], w_dec[9] = 3 * direction, -direction  # the norm does not matter: rows are scaled to unit length
    lake = LakeResource(root=lake_root)
    _write_decoder(lake, 1, w_dec)
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        result = _run(instance, lake, 1, with_checks=True)
        assert result.success
        assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
            "ranked_logit_effects": True, "one_row_per_feature": True}
        table = pl.read_delta(f"{lake_root}/logit_effects").sort("feature")
        assert table.height == N and table["feature"].to_list() == list(range(N))
        assert table.schema["promoted_ids"] == pl.List(pl.Int32) and table.schema["promoted_values"] == pl.List(
            pl.Float32) and table.schema["suppressed_tokens"] == pl.List(pl.String)
        for column in ("promoted_ids", "promoted_tokens", "promoted_values", "suppressed_ids", "suppressed_tokens",
                       "suppressed_values"):
            assert table[column].list.len().to_list() == [10] * N, column
        promoted = np.array(table["promoted_values"].to_list())
        suppressed = np.array(table["suppressed_values"].to_list())
        assert np.isfinite(promoted).all() and (np.diff(promoted, axis=1) <= 0).all()
        assert (np.diff(suppressed, axis=1) >= 0).all() and (promoted[:, -1] > suppressed[:, -1]).all()
        assert table["promoted_ids"][5][0] == THE and table["promoted_tokens"][5][0] == " the"
        assert table["suppressed_ids"][9][0] == THE and table["suppressed_tokens"][9][0] == " the"
        expected = float(w_u[:, THE].norm())  # unit row · W_U[:, t] = |W_U[:, t]|
        assert table["promoted_values"][5][0] == pytest.approx(expected, rel=1e-4)
        assert table["suppressed_values"][9][0] == pytest.approx(-expected, rel=1e-4)
        assert table["promoted_tokens"][0].to_list() == smollm2.token_strings(table["promoted_ids"][0].to_list())

        meta = result.asset_materializations_for_node("logit_effects")[0].metadata
        assert meta["dagster/row_count"].value == N and meta["vocab_size"].value == 49_152
        assert meta["input_table_versions"].value == {"sae_decoder": 0} and meta["top_k"].value == 10
        assert meta["norm_handling"].value.startswith("none: raw W_U") and meta["peak_memory_bytes"].value > 0
        assert meta["n_blocks"].value == 1 and "| feature | promoted | suppressed |" in meta["preview"].value
        assert "␣the (+" in meta["preview"].value

        folded = _run(instance, lake, 1, final_norm="fold", top_k=3)
        assert folded.success
        table = pl.read_delta(f"{lake_root}/logit_effects").sort("feature")
        assert table.height == N and table["promoted_ids"].list.len().to_list() == [3] * N
        assert table["promoted_ids"][5][0] == THE
        meta = folded.asset_materializations_for_node("logit_effects")[0].metadata
        assert meta["norm_handling"].value == "fold: rms norm weight folded into W_U"


@pytest.mark.slow
def test_a_decoder_of_another_width_fails_and_writes_nothing(test_catalog: Path, lake_root: str, smollm2) -> None:
    lake = LakeResource(root=lake_root)
    _write_decoder(lake, 1, np.ones((N, 24), dtype=np.float32))
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        text = failure_text(_run(instance, lake, 1))
    assert "decoder's d_in=24 does not match HuggingFaceTB/SmolLM2-135M-Instruct's d_model=576" in text
    assert lake_tables(lake_root) == ["sae_decoder"]


def test_missing_or_non_finite_decoder_fails_and_writes_nothing(test_catalog: Path, lake_root: str) -> None:
    lake = LakeResource(root=lake_root)
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        assert "materialize sae_decoder first" in failure_text(_run(instance, lake, 1))
        w_dec = np.ones((N, 576), dtype=np.float32)
        w_dec[[2, 7], 3] = np.inf
        _write_decoder(lake, 1, w_dec)
        assert "decoder has NaN or Inf values in 2 of 64 rows" in failure_text(_run(instance, lake, 1))
    assert lake_tables(lake_root) == ["sae_decoder"]
