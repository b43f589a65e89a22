"""SFAL alignment against a slow, obviously-correct reference on small random inputs (the tie-aware reference:
:mod:`tests.core.alignment.test_tied_ndcg`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sae_assets.core.alignment.sfal import DEFAULT_TOP_N, ndcg_by_rows, phi_from_counts, sfal_ndcg
from sae_assets.core.common.similarity import unit_rows
from tests.core.alignment.test_tied_ndcg import tie_aware_reference


def cosine_similarity(vectors: torch.Tensor) -> torch.Tensor:
    """``[d, dim]`` -> ``[d, d]`` float64; rows of zeros give similarity 0."""
    unit = unit_rows(vectors.to(torch.float64))
    return unit @ unit.T


def ndcg_scores(phi: torch.Tensor, semantic: torch.Tensor, top_n: int = DEFAULT_TOP_N,
                block: int = 512) -> torch.Tensor:
    """Per-feature NDCG@top_n ``[d]`` from whole ``phi`` and ``semantic`` matrices ``[d, d]``: the scorer on rows
    sliced from dense matrices, against which the blocked Phi and cosine rows of ``sfal_ndcg`` are checked."""
    return ndcg_by_rows(lambda rows: phi[rows], lambda rows: semantic[rows], phi.shape[0], phi.device,
                        top_n=top_n, block=block)


def _phi_reference(presence: np.ndarray) -> np.ndarray:
    n, d = presence.shape
    out = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            a = int((presence[:, i] & presence[:, j]).sum())
            b = int((presence[:, i] & ~presence[:, j]).sum())
            c = int((~presence[:, i] & presence[:, j]).sum())
            e = n - a - b - c
            den = math.sqrt((a + b) * (c + e) * (a + c) * (b + e))
            out[i, j] = (a * e - b * c) / den if den else 0.0
    return out


def test_phi_matches_the_contingency_table() -> None:
    rng = np.random.default_rng(0)
    presence = rng.random((40, 7)) < 0.3
    presence[:, 5] = False  # never present
    presence[:, 6] = True  # always present
    p = torch.from_numpy(presence.astype(np.float64))
    counts = (p.T @ p).long()
    np.testing.assert_allclose(phi_from_counts(counts, 40).numpy(), _phi_reference(presence), atol=1e-12)


@pytest.mark.parametrize(("d", "top_n", "block"), [(9, 1023, 4), (12, 5, 5), (2, 3, 1)])
def test_ndcg_matches_the_reference(d: int, top_n: int, block: int) -> None:
    rng = np.random.default_rng(d)
    presence = rng.random((60, d)) < 0.25
    p = torch.from_numpy(presence.astype(np.float64))
    phi = phi_from_counts((p.T @ p).long(), 60)
    vectors = torch.from_numpy(rng.standard_normal((d, 4)))
    vectors[0] = 0  # a feature without an explanation: zero vector
    sem = cosine_similarity(vectors)
    sem = torch.round(sem * 4) / 4  # force ties, which count as ties (no order among them)
    ours = ndcg_scores(phi, sem, top_n=top_n, block=block).numpy()
    np.testing.assert_allclose(ours, tie_aware_reference(phi.numpy(), sem.numpy(), top_n), rtol=1e-12)
    assert ((ours >= 0) & (ours <= 1 + 1e-12)).all()


def test_identical_rankings_score_one() -> None:
    sim = cosine_similarity(torch.randn(16, 3, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(ndcg_scores(sim, sim, top_n=6), torch.ones(16, dtype=torch.float64))
    assert cosine_similarity(torch.zeros(2, 3)).abs().sum() == 0


def test_blocked_sfal_equals_the_dense_matrices() -> None:
    rng = np.random.default_rng(7)
    presence = torch.from_numpy((rng.random((80, 23)) < 0.2).astype(np.float64))
    counts = (presence.T @ presence).long()
    counts[3, 3] = 0  # a dead feature: Phi 0 with everything
    vectors = torch.from_numpy(rng.standard_normal((23, 5)))
    vectors[[0, 9]] = 0  # no explanation
    vectors[4] = vectors[2]  # identical explanations tie exactly
    phi = phi_from_counts(counts, 80)
    assert torch.equal(phi_from_counts(counts, 80, torch.tensor([4, 0, 22])), phi[[4, 0, 22]])
    dense = ndcg_scores(phi, cosine_similarity(vectors), top_n=10, block=23)
    blocked = sfal_ndcg(counts, 80, vectors, top_n=10, block=4)
    np.testing.assert_allclose(blocked.numpy(), dense.numpy(), rtol=1e-12)
    np.testing.assert_allclose(blocked.numpy(), tie_aware_reference(phi.numpy(), cosine_similarity(vectors).numpy(),
                                                                     10), rtol=1e-12)


def test_phi_rows_computed_a_few_at_a_time_equal_the_formula_bit_for_bit() -> None:
    rng = np.random.default_rng(11)
    d, n = 1100, 500  # 1100 columns of float64: 476 rows per cache-sized pass, so blocks take several passes
    presence = torch.from_numpy((rng.random((n, d)) < rng.uniform(0.001, 0.3, d)).astype(np.float32))
    counts = (presence.T @ presence).round().int()
    marg = counts.diagonal().double()
    spread = marg * (n - marg)
    inv_sd = torch.where(spread > 0, spread.clamp_min(1e-300).rsqrt(), torch.zeros((), dtype=torch.float64))
    formula = (counts.double() * n - marg[:, None] * marg[None]) * inv_sd[:, None] * inv_sd[None]
    assert torch.equal(phi_from_counts(counts, n), formula)
    assert torch.equal(phi_from_counts(counts, n, torch.arange(100, 1090)), formula[100:1090])
    scattered = torch.from_numpy(rng.choice(d, 600, replace=False))
    assert torch.equal(phi_from_counts(counts, n, scattered), formula[scattered])


def test_sfal_ranks_long_rows_with_the_compiled_selection_to_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows from ``COMPILED_MIN_COLUMNS`` on are ranked by the compiled kernel: the NDCG is bit-for-bit the torch
    path's (dead features, unexplained features, duplicate explanations, a partial last block)."""
    import sae_assets.core.common.ranking_torch as ranking

    rng = np.random.default_rng(17)
    d = 700
    presence = torch.from_numpy((rng.random((300, d)) < rng.uniform(0.005, 0.3, d)).astype(np.float64))
    counts = (presence.T @ presence).int()
    counts[5, 5] = 0  # dead
    vectors = torch.from_numpy(rng.standard_normal((d, 16)))
    vectors[rng.random(d) < 0.1] = 0  # unexplained
    vectors[40] = vectors[41]
    torch_path = sfal_ndcg(counts, 300, vectors, top_n=200, block=128)
    monkeypatch.setattr(ranking, "COMPILED_MIN_COLUMNS", 512)
    calls: list[int] = []
    compiled = ranking._compiled_order
    monkeypatch.setattr(ranking, "_compiled_order", lambda s, k: calls.append(k) or compiled(s, k))
    assert torch.equal(sfal_ndcg(counts, 300, vectors, top_n=200, block=128), torch_path)
    # loaded before the first block, then both rankings of every block (6 blocks): top_n + 1 columns, the last one
    # saying whether the tie group at the cut-off goes on past it
    assert calls == [1] + [201] * 2 * 6
