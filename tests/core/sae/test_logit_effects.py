"""Blocked logit effects against a dense decoder · W_U and a stable sort; the final-norm folding; the table."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch

from sae_assets.core.common.language_model import LanguageModel, NormKind, Unembedding
from sae_assets.core.sae.logit_effects import (
    LOGIT_EFFECTS_SCHEMA,
    MIB,
    FinalNorm,
    LogitEffectsConfig,
    block_rows,
    compute_logit_effects,
    effective_unembedding,
    record_batches,
)
from tests.builders import build_tiny_lm

D_SAE, D_IN, VOCAB, BLOCK = 50, 12, 1003, 7  # 8 blocks, the last of 1; the vocabulary is no multiple of 7


def _reference(w_dec: torch.Tensor, w_u: torch.Tensor, k: int, unit: bool = True) -> tuple[torch.Tensor, ...]:
    """Dense float64 logits, then a stable sort: (promoted ids, values, suppressed ids, values), ties by id."""
    rows = w_dec.double()
    if unit:
        rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)
    dense = rows @ w_u.double()
    top = torch.sort(dense, dim=1, descending=True, stable=True).indices[:, :k]
    bottom = torch.sort(dense, dim=1, stable=True).indices[:, :k]
    return top, dense.gather(1, top), bottom, dense.gather(1, bottom)


def _random(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(D_SAE, D_IN, generator=g), torch.randn(D_IN, VOCAB, generator=g),
            0.5 + torch.rand(D_IN, generator=g))


@pytest.mark.parametrize(("final_norm", "kind"), [("none", "rms"), ("fold", "rms"), ("fold", "layer")])
def test_blocks_match_the_dense_product(final_norm: FinalNorm, kind: NormKind) -> None:
    w_dec, w_u, scale = _random()
    unembedding = Unembedding(w_u=w_u, norm_scale=scale, norm_kind=kind)
    expected_w_u = w_u if final_norm == "none" else scale[:, None] * w_u
    if final_norm == "fold" and kind == "layer":
        expected_w_u = expected_w_u - expected_w_u.mean(dim=0, keepdim=True)
    reports: list[str] = []
    effects = compute_logit_effects(w_dec, unembedding, LogitEffectsConfig(final_norm=final_norm),
                                    report=reports.append, block_features=BLOCK)
    assert (effects.n_blocks, effects.block_features, effects.vocab) == (8, BLOCK, VOCAB)
    top, top_values, bottom, bottom_values = _reference(w_dec, expected_w_u, 10)
    assert effects.promoted_ids.shape == (D_SAE, 10) and effects.promoted_ids.dtype == torch.int64
    assert torch.equal(effects.promoted_ids, top) and torch.equal(effects.suppressed_ids, bottom)
    torch.testing.assert_close(effects.promoted_values, top_values.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(effects.suppressed_values, bottom_values.float(), rtol=1e-5, atol=1e-5)
    assert reports[-1].startswith(f"logit_effects: {D_SAE}/{D_SAE} features (100%)")
    assert effects.peak_bytes > 0 and effects.peak_measure == "process RSS"
    assert effects.norm_handling.startswith(final_norm)


def test_unit_decoder_changes_values_not_ranks() -> None:
    w_dec, w_u, _ = _random(1)
    unembedding = Unembedding(w_u=w_u, norm_scale=None, norm_kind=None)
    unit = compute_logit_effects(w_dec, unembedding, block_features=BLOCK)
    raw = compute_logit_effects(w_dec, unembedding, LogitEffectsConfig(unit_decoder=False), block_features=BLOCK)
    assert torch.equal(unit.promoted_ids, raw.promoted_ids) and torch.equal(unit.suppressed_ids, raw.suppressed_ids)
    torch.testing.assert_close(raw.promoted_values, unit.promoted_values * w_dec.norm(dim=1, keepdim=True))


def test_ties_go_to_the_lower_token_id_whatever_the_blocks() -> None:
    """Small integer matrices: exact products and many equal logits; a zero row ties every token."""
    g = torch.Generator().manual_seed(2)
    w_dec = torch.randint(-2, 3, (23, 4), generator=g).float()
    w_dec[[3, 17]] = 0.0
    w_u = torch.randint(-1, 2, (4, 97), generator=g).float()
    unembedding = Unembedding(w_u=w_u, norm_scale=None, norm_kind=None)
    config = LogitEffectsConfig(unit_decoder=False)
    runs = [compute_logit_effects(w_dec, unembedding, config, block_features=b) for b in (1, 3, 23)]
    top, top_values, bottom, bottom_values = _reference(w_dec, w_u, 10, unit=False)
    for effects in runs:
        assert torch.equal(effects.promoted_ids, top) and torch.equal(effects.suppressed_ids, bottom)
        assert torch.equal(effects.promoted_values, top_values.float())
        assert torch.equal(effects.suppressed_values, bottom_values.float())
    assert runs[0].promoted_ids[3].tolist() == list(range(10)) == runs[0].suppressed_ids[17].tolist()


def test_block_size_follows_the_budget_and_k_the_vocabulary() -> None:
    assert block_rows(49_152, 256 * MIB) == 1365 and block_rows(256_000, 256 * MIB) == 262
    assert block_rows(10**9, 1) == 1
    w_dec, w_u, _ = _random()
    effects = compute_logit_effects(w_dec, Unembedding(w_u[:, :6], None, None), LogitEffectsConfig(top_k=10))
    assert effects.promoted_ids.shape == (D_SAE, 6) and effects.n_blocks == 1
    assert sorted(effects.promoted_ids[0].tolist()) == list(range(6))
    with pytest.raises(ValueError, match="d_in=12 does not match the unembedding's d_model=7"):
        compute_logit_effects(w_dec, Unembedding(torch.zeros(7, 20), None, None))


def test_effective_unembedding_folds_gemma_and_layer_norms() -> None:
    w_u, scale = torch.randn(6, 40), torch.rand(6) + 0.5
    assert torch.equal(effective_unembedding(Unembedding(w_u, scale, "rms"), "none", "cpu"), w_u)
    torch.testing.assert_close(effective_unembedding(Unembedding(w_u, scale, "rms"), "fold", "cpu"),
                               scale[:, None] * w_u)
    centred = effective_unembedding(Unembedding(w_u, scale, "layer"), "fold", "cpu")
    torch.testing.assert_close(centred.mean(dim=0), torch.zeros(40), atol=1e-6, rtol=0)
    # A direction's effect through LayerNorm is that of its centred part, scaled by the weight.
    d = torch.randn(6)
    torch.testing.assert_close(d @ centred, (scale * (d - d.mean())) @ w_u, rtol=1e-5, atol=1e-5)


def test_language_model_unembedding() -> None:
    tiny = build_tiny_lm(d_model=16, d_vocab=50)  # a HookedTransformer with a final LayerNorm
    u = tiny.unembedding()
    assert u.norm_kind == "layer" and u.w_u.shape == (16, 50) and torch.equal(u.w_u, tiny.model.W_U)
    assert u.norm_scale is not None and torch.equal(u.norm_scale, tiny.model.ln_final.w)
    w = torch.randn(8)  # Gemma-style RMSNorm on a TransformerBridge: x / rms(x) * (1 + w)
    gemma = SimpleNamespace(cfg=SimpleNamespace(normalization_type="RMS", rmsnorm_uses_offset=True),
                            W_U=torch.randn(8, 30), ln_final=SimpleNamespace(w=w))
    u = LanguageModel("gemma-like", gemma, None, torch.device("cpu"), torch.float32).unembedding()
    assert u.norm_kind == "rms" and u.norm_scale is not None and torch.equal(u.norm_scale, 1 + w)
    folded = SimpleNamespace(cfg=SimpleNamespace(normalization_type="RMSPre"), W_U=torch.randn(8, 30),
                             ln_final=SimpleNamespace())  # fold_ln already applied: no weight left
    u = LanguageModel("folded", folded, None, torch.device("cpu"), torch.float32).unembedding()
    assert u.norm_kind == "rms" and u.norm_scale is None


def test_record_batches_hold_ids_tokens_and_values() -> None:
    w_dec, w_u, _ = _random()
    effects = compute_logit_effects(w_dec, Unembedding(w_u, None, None), block_features=BLOCK)
    asked: list[list[int]] = []

    def strings(ids: list[int]) -> list[str]:
        asked.append(ids)
        return [f"<t{i}>" for i in ids]

    features = np.arange(100, 100 + D_SAE)
    batches = list(record_batches(effects, features, strings, rows=16))
    assert [b.num_rows for b in batches] == [16, 16, 16, 2] and len(asked) == 1  # each distinct id decoded once
    frame = pl.DataFrame(pa.Table.from_batches(batches, LOGIT_EFFECTS_SCHEMA))
    assert frame.schema["promoted_ids"] == pl.List(pl.Int32) and frame.schema["feature"] == pl.Int32
    assert frame.schema["suppressed_values"] == pl.List(pl.Float32)
    assert frame["feature"].to_list() == features.tolist()
    assert frame["promoted_ids"].to_list() == effects.promoted_ids.tolist()
    assert frame["suppressed_tokens"][4].to_list() == [f"<t{i}>" for i in effects.suppressed_ids[4].tolist()]
    assert np.array_equal(np.array(frame["promoted_values"].to_list(), dtype=np.float32),
                          effects.promoted_values.numpy())
