"""SFAL's tie rule: similarities snapped to the 2^-30 grid, NDCG tie-aware (McSherry & Najork 2008), against an
independent brute force over tie groups; rounding noise, feature order and the top_n cut-off change nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sae_assets.core.alignment.sfal import ndcg_by_rows, phi_from_counts, sfal_ndcg
from sae_assets.core.alignment.tied_ndcg import run_ids, run_totals
from sae_assets.core.common.similarity import unit_rows

GRID = 2.0**-30


def tie_groups(scores: dict[int, int]) -> list[list[int]]:
    """Features by score, highest first, as groups of equal scores (each ascending)."""
    return [sorted(j for j, v in scores.items() if v == value) for value in sorted(set(scores.values()), reverse=True)]


def group_dcg(groups: list[list[int]], rel: dict[int, float], top_n: int) -> float:
    """DCG@top_n of a ranking by tie groups: each rank of a group counts the mean relevance of all its members."""
    terms, rank = [], 0
    for group in groups:
        mean = math.fsum(rel[j] for j in group) / len(group)
        terms += [mean / math.log2(r + 2) for r in range(rank, min(rank + len(group), top_n))]
        rank += len(group)
    return math.fsum(terms)


def tie_aware_reference(phi: np.ndarray, sem: np.ndarray, top_n: int) -> np.ndarray:
    """Tie-aware NDCG@top_n per feature from whole ``[d, d]`` matrices, by tie groups written out one by one: values
    tie when ``round(x / 2^-30)`` is the same integer; a semantic group spanning ranks a..b-1 gives each member the
    mean gain of those ranks (0 from top_n on); a Phi group puts its members' mean relevance (all members) at each of
    its ranks before top_n; the ideal DCG is the semantic groups' own."""
    d = phi.shape[0]
    top_n = min(top_n, d - 1)
    out = []
    for i in range(d):
        others = [j for j in range(d) if j != i]
        by_sem = tie_groups({j: round(float(sem[i, j]) / GRID) for j in others})
        by_phi = tie_groups({j: round(float(phi[i, j]) / GRID) for j in others})
        rel: dict[int, float] = {}
        rank = 0
        for group in by_sem:
            gains = [max(0.0, 1.1 ** (top_n - r) - 1) for r in range(rank, rank + len(group))]
            rel.update(dict.fromkeys(group, math.fsum(gains) / len(group)))
            rank += len(group)
        out.append(group_dcg(by_phi, rel, top_n) / group_dcg(by_sem, rel, top_n))
    return np.array(out)


def dense_ndcg(phi: np.ndarray, sem: np.ndarray, top_n: int, block: int) -> np.ndarray:
    p, s = torch.from_numpy(phi), torch.from_numpy(sem)
    return ndcg_by_rows(lambda rows: p[rows], lambda rows: s[rows], len(phi), "cpu", top_n=top_n,
                        block=block).numpy()


def noisy(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` moved by up to 3 ulps per entry, as blocked products round: 0.9999999999999998 for 1.0."""
    return x + np.spacing(x) * rng.integers(-3, 4, x.shape)


def tied_matrices(d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Phi-like and cosine-like ``[d, d]`` rows with ties everywhere: values from a few sevenths (far from the grid's
    cell edges), duplicated features, and a feature tied with everything (no explanation)."""
    phi = rng.integers(-2, 5, (d, d)) / 7
    sem = rng.integers(-1, 7, (d, d)) / 7
    for c in range(1, d - 1, 3):
        sem[:, c] = sem[:, c + 1]  # features c and c + 1 explained alike
    sem[0] = 0.0  # a feature without an explanation: cosine 0 with everything
    return phi, sem


@pytest.mark.parametrize(("seed", "d", "top_n", "block"),
                         [(0, 7, 1023, 3), (1, 12, 3, 5), (2, 15, 6, 15), (3, 20, 1, 7), (4, 9, 4, 1), (5, 30, 10, 8),
                          (6, 3, 1, 2)])
def test_matches_the_brute_force_on_random_ties_with_rounding_noise(seed: int, d: int, top_n: int, block: int) -> None:
    rng = np.random.default_rng(seed)
    phi, sem = tied_matrices(d, rng)
    expected = tie_aware_reference(phi, sem, top_n)
    got = dense_ndcg(noisy(phi, rng), noisy(sem, rng), top_n, block)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert got[0] == pytest.approx(1, abs=1e-12)  # every neighbour tied on meaning: any order is ideal
    assert ((got >= 0) & (got <= 1)).all()


def test_continuous_values_without_ties_are_plain_ndcg() -> None:
    rng = np.random.default_rng(8)
    phi, sem = rng.standard_normal((25, 25)), rng.standard_normal((25, 25))
    got = dense_ndcg(phi, sem, 6, 4)
    plain = []
    for i in range(25):
        others = [j for j in range(25) if j != i]
        by_sem = sorted(others, key=lambda j: -sem[i, j])  # noqa: B023
        rel = {j: max(0.0, 1.1 ** (6 - r) - 1) for r, j in enumerate(by_sem)}
        by_phi = sorted(others, key=lambda j: -phi[i, j])  # noqa: B023
        plain.append(sum(rel[j] / math.log2(r + 2) for r, j in enumerate(by_phi[:6]))
                     / sum(rel[j] / math.log2(r + 2) for r, j in enumerate(by_sem[:6])))
    np.testing.assert_allclose(got, plain, rtol=1e-12)


def test_rounding_noise_no_longer_orders_tied_neighbours() -> None:
    """The issue's case: duplicate explanations tie at 1.0, which blocked products return as 0.9999999999999998 in
    one column and 1.0000000000000002 in another. A stable sort of the raw values orders the tied pair by that
    rounding (so did the old scorer: feature 0 scored 0.77 or 0.37); the tie-aware score is the same whichever way the
    rounding falls."""
    sem = np.array([[-1, 1.0, 1.0, 0.5, 0.2, 0.1], [1.0, -1, 1.0, 0.5, 0.2, 0.1], [1.0, 1.0, -1, 0.5, 0.2, 0.1],
                    [0.5, 0.5, 0.5, -1, 0.3, 0.0], [0.2, 0.2, 0.2, 0.3, -1, 0.4], [0.1, 0.1, 0.1, 0.0, 0.4, -1]])
    phi = np.array([[-1, 0.1, 0.9, 0.3, 0.2, 0.0]] * 6)
    low, high = sem.copy(), sem.copy()
    low[0, 1], high[0, 2] = 0.9999999999999998, 0.9999999999999998  # one or the other comes out a bit low
    assert np.argsort(-low[0], kind="stable")[0] == 2 and np.argsort(-high[0], kind="stable")[0] == 1
    a, b = dense_ndcg(phi, low, 2, 6), dense_ndcg(phi, high, 2, 6)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, tie_aware_reference(phi, sem, 2), rtol=1e-12)
    # by hand, feature 0 with top_n 2: features 1 and 2 tie for ranks 0-1, each relevant (0.21 + 0.1) / 2; Phi ranks 2
    # then 3 (relevance 0): DCG 0.155, ideal 0.155 * (1 + 1 / log2 3)
    assert a[0] == pytest.approx(1 / (1 + 1 / math.log2(3)), rel=1e-12)


def test_groups_straddling_the_cut_off_by_hand() -> None:
    """top_n = 2, so gains 0.21 and 0.1 for semantic ranks 0 and 1, 0 after. Feature 0's semantic row: feature 5
    first, then 2, 3, 4 tied over ranks 1-3 (each (0.1 + 0 + 0) / 3), feature 1 last. Its Phi rows: a tie group over
    ranks 1-3 whose most relevant member (feature 5) has the highest index, which a cut by feature index would drop."""
    third = 0.1 / 3
    ideal = 0.21 + third / math.log2(3)
    sem = np.full((6, 6), 0.5)
    sem[0] = [-1, 0.0, 0.6, 0.6, 0.6, 0.9]
    cases = {  # feature 0's Phi row -> its NDCG
        # 4 (relevance 1/30) first, then 1, 3, 5 tied over ranks 1-3: their mean relevance (0 + 1/30 + 0.21) / 3
        (-1, 0.3, 0.0, 0.3, 0.9, 0.3): third + (third + 0.21) / 3 / math.log2(3),
        (-1, 0.0, 0.8, 0.8, 0.1, 0.2): third * (1 + 1 / math.log2(3)),  # two of the semantic group, tied
        (-1, 0.0, 0.3, 0.3, 0.3, 0.9): ideal,  # the semantic order itself, group straddling the cut-off
        (-1, 0.4, 0.4, 0.4, 0.4, 0.4): (0.21 + 3 * third) / 5 * (1 + 1 / math.log2(3)),  # everything tied
    }
    for row, dcg in cases.items():
        phi = np.full((6, 6), 0.5)
        phi[0] = row
        got = dense_ndcg(phi, sem, 2, 4)[0]
        assert got == pytest.approx(dcg / ideal, rel=1e-12), row
        assert got == pytest.approx(tie_aware_reference(phi, sem, 2)[0], rel=1e-12), row


def sfal_inputs(d: int, seed: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Co-occurrence counts and explanation embeddings built to tie: duplicated features (equal counts and
    marginals), duplicate explanations (20 features labelled alike), unexplained and dead features."""
    rng = np.random.default_rng(seed)
    n = 40
    presence = rng.random((n, d)) < rng.uniform(0.05, 0.4, d)
    for c in range(0, d - 1, 4):
        presence[:, c + 1] = presence[:, c]  # the same windows: Phi ties
    presence[:, 3] = False  # dead: Phi 0 with everything
    p = torch.from_numpy(presence.astype(np.float64))
    counts = (p.T @ p).long()
    vectors = torch.from_numpy(rng.standard_normal((d, 6)))
    vectors[rng.choice(d, d // 3, replace=False)] = vectors[5].clone()  # many features with one label
    vectors[[2, 7]] = 0  # no explanation
    return counts, n, vectors


@pytest.mark.parametrize(("d", "top_n", "block"), [(37, 5, 8), (37, 36, 37), (50, 12, 16), (24, 1, 5)])
def test_permuting_the_features_permutes_the_scores(d: int, top_n: int, block: int) -> None:
    counts, n, vectors = sfal_inputs(d, d + top_n)
    scores = sfal_ndcg(counts, n, vectors, top_n=top_n, block=block)
    unit = unit_rows(vectors)
    np.testing.assert_allclose(scores.numpy(), tie_aware_reference(phi_from_counts(counts, n).numpy(),
                                                                   (unit @ unit.T).numpy(), top_n), rtol=1e-12)
    for seed in range(3):
        perm = torch.from_numpy(np.random.default_rng(seed).permutation(d))
        permuted = sfal_ndcg(counts[perm][:, perm], n, vectors[perm], top_n=top_n, block=block)
        np.testing.assert_allclose(permuted.numpy(), scores[perm].numpy(), rtol=1e-12, atol=1e-12)


def test_features_explained_alike_tie_at_one() -> None:
    counts, n, vectors = sfal_inputs(30, 1)
    vectors[:] = vectors[5].clone()  # every feature labelled "the": every ranking of the others is ideal
    np.testing.assert_allclose(sfal_ndcg(counts, n, vectors, top_n=8, block=7).numpy(), 1.0, rtol=1e-12)


def test_run_totals_sum_each_run() -> None:
    rng = np.random.default_rng(3)
    values = -np.sort(-rng.integers(0, 6, (9, 40)), axis=1).astype(np.float64)
    values[0] = 1.0  # one run
    values[1] = -np.arange(40)  # forty runs
    weights = rng.random((9, 40))
    runs = run_ids(torch.from_numpy(values))
    total, size = run_totals(torch.from_numpy(weights), runs)
    for r in range(9):
        for c in range(40):
            same = values[r] == values[r, c]
            assert total[r, c].item() == pytest.approx(weights[r, same].sum(), rel=1e-14)
            assert size[r, c].item() == same.sum()
    assert run_ids(torch.ones((2, 1))).tolist() == [[0], [0]]
