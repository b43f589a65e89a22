"""Logit effects through Gemma 3 270M's real unembedding (tied, 262,144 tokens, behind a ``1 + w`` RMSNorm): the
blocked computation against one dense product over the whole vocabulary and ``torch.topk``."""

from __future__ import annotations

import pytest
import torch

from sae_assets.core.sae.logit_effects import FinalNorm, LogitEffectsConfig, compute_logit_effects
from tests import gemma as gemma_fixtures
from tests.gemma import D_MODEL, VOCAB

gemma = gemma_fixtures.gemma
pytestmark = pytest.mark.slow

D_SAE, K, BUDGET_MIB = 40, 10, 6
"""A 6 MiB budget holds 6 rows of 262,144 float32 logits: 7 blocks, the last of 4."""
ZERO, SAME, SCALED = 0, 3, 20
"""A zero decoder row (every token ties at 0), and a row that is another's times 2.5 in another block."""
VOCAB_CHUNK = 32_768
"""Columns of W_U cast to float64 at a time for the reference (the whole of it would be 1.3 GB)."""


def _decoder() -> torch.Tensor:
    w_dec = torch.randn(D_SAE, D_MODEL, generator=torch.Generator().manual_seed(33))
    w_dec[ZERO] = 0
    w_dec[SCALED] = 2.5 * w_dec[SAME]
    return w_dec


def _dense(w_dec: torch.Tensor, w_u: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``unit(w_dec) @ (diag(scale) @ W_U)`` in float64, ``[d_sae, vocab]`` (the scale applied to the rows instead:
    the same product)."""
    rows = w_dec.double()
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)
    if scale is not None:
        rows = rows * scale.double()
    return torch.cat([rows @ w_u[:, i:i + VOCAB_CHUNK].double() for i in range(0, w_u.shape[1], VOCAB_CHUNK)], 1)


def _check_side(ids: torch.Tensor, values: torch.Tensor, dense: torch.Tensor, largest: bool) -> None:
    """Values as ``torch.topk`` gives them; ids equal where the value is unique in the row (to float tolerance),
    and where values tie, the lower ids first (what ``compute_logit_effects`` promises)."""
    expected_values, expected_ids = torch.topk(dense, K, dim=1, largest=largest)
    scale = dense.abs().amax(dim=1, keepdim=True)
    tol = 1e-5 * scale
    torch.testing.assert_close(values.double(), expected_values, rtol=0, atol=float(tol.max()))
    torch.testing.assert_close(dense.gather(1, ids), expected_values, rtol=0, atol=float(tol.max()))
    # A value is tied when another token of the row is within the tolerance of it.
    unique = torch.stack([((dense - expected_values[:, j:j + 1]).abs() <= tol).sum(dim=1) == 1 for j in range(K)],
                         dim=1)
    assert torch.equal(ids[unique], expected_ids[unique])
    for row in (~unique).any(dim=1).nonzero().flatten().tolist():  # ties: lower ids first among equal values
        same = values[row, 1:] == values[row, :-1]
        assert (ids[row, 1:][same] > ids[row, :-1][same]).all()


@pytest.mark.parametrize("final_norm", ["fold", "none"])
def test_blocked_effects_match_the_dense_product_over_the_gemma_vocabulary(gemma, final_norm: FinalNorm) -> None:
    unembedding = gemma.unembedding()
    assert unembedding.w_u.shape == (D_MODEL, VOCAB) and unembedding.norm_scale is not None
    w_dec = _decoder()
    effects = compute_logit_effects(w_dec, unembedding, LogitEffectsConfig(
        top_k=K, final_norm=final_norm, memory_budget_mib=BUDGET_MIB))
    assert (effects.vocab, effects.block_features, effects.n_blocks) == (VOCAB, 6, 7)
    assert effects.promoted_ids.shape == effects.suppressed_ids.shape == (D_SAE, K)

    dense = _dense(w_dec, unembedding.w_u, unembedding.norm_scale if final_norm == "fold" else None)
    live = torch.ones(D_SAE, dtype=torch.bool)
    live[ZERO] = False
    _check_side(effects.promoted_ids[live], effects.promoted_values[live], dense[live], largest=True)
    _check_side(effects.suppressed_ids[live], effects.suppressed_values[live], dense[live], largest=False)

    # The zero row ties every token at 0: the first ids, whatever the blocks. A row and a multiple of it in another
    # block have the same unit direction, so the same tokens and values.
    for ids, values in ((effects.promoted_ids, effects.promoted_values),
                        (effects.suppressed_ids, effects.suppressed_values)):
        assert ids[ZERO].tolist() == list(range(K)) and not values[ZERO].any()
        assert torch.equal(ids[SCALED], ids[SAME])
        torch.testing.assert_close(values[SCALED], values[SAME], rtol=1e-5, atol=1e-6)
    assert (effects.promoted_values[live] > 0).all() and (effects.suppressed_values[live] < 0).all()


def test_folding_gemmas_final_norm_changes_the_rankings(gemma) -> None:
    """``1 + w`` runs from about 0.2 to 301 over d_model: folding it reorders the tokens of almost every feature."""
    unembedding = gemma.unembedding()
    w_dec = _decoder()
    config = LogitEffectsConfig(top_k=K, memory_budget_mib=64)
    raw = compute_logit_effects(w_dec, unembedding, config)
    folded = compute_logit_effects(w_dec, unembedding, LogitEffectsConfig(top_k=K, final_norm="fold",
                                                                          memory_budget_mib=64))
    differ = (raw.promoted_ids != folded.promoted_ids).any(dim=1)
    assert differ.sum() >= D_SAE - 2  # all but the zero row (and, at most, one chance agreement)
    assert config.final_norm == "none" and raw.norm_handling.startswith("none")
    assert folded.norm_handling == "fold: rms norm weight folded into W_U"
