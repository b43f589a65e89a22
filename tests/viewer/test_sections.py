"""The feature page's ranked sections against SFAL's maths: the same Phi bit for bit, the same tie order."""

from __future__ import annotations

import numpy as np
import torch

from sae_assets.core.alignment.sfal import phi_from_counts
from sae_assets.core.common.similarity import unit_rows
from sae_assets.viewer import sections as s


def test_cooccurring_phi_is_sfals_bit_for_bit() -> None:
    rng = np.random.default_rng(21)
    d, n = 300, 200
    presence = torch.from_numpy((rng.random((n, d)) < rng.uniform(0.01, 0.3, d)).astype(np.float64))
    presence[:, 0] = 1  # in every window: Phi undefined, 0
    presence[:40, 1] = presence[:40, 2] = 1  # partners of feature 1 tied on Phi
    counts = (presence.T @ presence).long()
    phi, marginals = phi_from_counts(counts, n).numpy(), counts.diagonal().numpy()
    for feature in range(d):
        partners = np.flatnonzero((counts[feature].numpy() > 0) & (np.arange(d) != feature))
        shuffled = rng.permutation(partners)  # the table keeps them ascending; ties still go to the lower feature
        row = {"partners": shuffled.tolist(), "counts": counts[feature, shuffled].tolist(), "n_windows": n,
               "marginal": int(marginals[feature])}
        got = s.cooccurring_section(row, marginals, {}, n=15)["partners"]
        # on the tie grid: feature 150's partners 44 and 114 have Phi 7/57 from different counts, one ulp apart
        expected = sorted(partners, key=lambda j: (-round(phi[feature, j] * 2**30), j))[:15]
        assert [p["feature"] for p in got] == expected, feature
        assert [p["phi"] for p in got] == [phi[feature, j] for j in expected], feature
    assert all(p["phi"] == 0 for p in s.cooccurring_section(
        {"partners": [1, 2], "counts": [n, n], "n_windows": n, "marginal": n}, marginals, {})["partners"])


def test_cosine_neighbours_rank_as_a_stable_sort_and_skip_what_is_not_a_number() -> None:
    rng = np.random.default_rng(4)
    matrix = rng.standard_normal((80, 8)).astype(np.float32)
    matrix[10] = matrix[11] = matrix[12]  # ties: lower feature first
    matrix[30, 2] = np.nan  # a broken embedding: no similarity, never a neighbour
    matrix[40] = 0  # no explanation: similarity 0 with every row
    unit = unit_rows(matrix)
    unit[30] = np.nan
    features = np.arange(100, 180)
    got = s.cosine_neighbours(unit, features, 12, {}, n=12)
    sims = unit.astype(np.float64) @ unit[12].astype(np.float64)  # float64: rounding noise ~1e-16, on the grid none
    sims[12] = -np.inf
    order = [j for j in np.argsort(-np.round(sims * 2**30), kind="stable") if np.isfinite(sims[j])][:12]
    assert [g["feature"] for g in got] == (features[order]).tolist()
    assert [g["similarity"] for g in got] == sims[order].tolist()
    assert got[0]["feature"] == 110 and got[1]["feature"] == 111 and 130 not in [g["feature"] for g in got]


def test_rounding_noise_orders_no_tied_values() -> None:
    """Values equal but for their last bits (1.0 from a blocked product: 0.9999999999999998, 1.0000000000000002) tie
    on the 2^-30 grid and go by position; values further apart than the grid keep their order."""
    scores = np.array([0.3, 1.0000000000000002, 0.9999999999999998, 1.0, -np.inf, 1.0 - 2e-9, 0.3 + 1e-17])
    assert s.top_positions(scores, 6).tolist() == [1, 2, 3, 5, 0, 6]
    assert np.argsort(-scores, kind="stable")[:3].tolist() == [1, 3, 2]  # by the raw bits: the rounding decides
