"""The k-NN's float64 re-scoring of its float32 screen: exact against a brute force on the tie grid, whether a row is
certified from its candidates or recomputed whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sae_assets.core.feature_map.knn_rescore as rescore
from sae_assets.core.common.similarity import unit_rows
from sae_assets.core.feature_map.knn import SCREEN_SLACK, exact_knn

GRID = 2.0**-30


def grid_brute_force(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k-NN's definition written out: float64 products of the float32 unit rows (torch's, as the k-NN has them),
    rounded to multiples of 2^-30, self excluded, by value descending then index ascending."""
    unit = unit_rows(torch.from_numpy(x.astype(np.float32))).numpy().astype(np.float64)
    sims = np.round((unit @ unit.T) / GRID) * GRID
    np.fill_diagonal(sims, -np.inf)
    order = np.stack([np.lexsort((np.arange(len(x)), -row))[:k] for row in sims])
    return order, np.take_along_axis(sims, order, 1)


def counted_whole_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows recomputed whole by the next k-NN calls, appended as they are."""
    seen: list[int] = []
    whole = rescore.whole_rows

    def spy(unit: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        seen.extend(rows.tolist())
        return whole(unit, rows, k)

    monkeypatch.setattr(rescore, "whole_rows", spy)
    return seen


@pytest.mark.parametrize(("n", "dim", "k", "block"), [(120, 48, 5, 32), (90, 300, 10, 4096), (120, 16, 30, 9)])
def test_duplicates_and_near_duplicates_rank_by_index_whatever_the_rounding(
        n: int, dim: int, k: int, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random rows (their similarities are not exact in float32, so blocks round them differently), with groups of
    duplicate rows (exact ties at every value), a cluster of near-duplicates closer than the screen's rounding, and
    a zero row."""
    rng = np.random.default_rng(n + k)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[10:14] = x[3]  # five features with one direction: ties within the top k
    x[20 : 20 + k + max(SCREEN_SLACK, k // 2) + 2] = x[5]  # more duplicates than the screen's candidates
    base = rng.standard_normal(dim)
    x[-8:] = (base + 1e-6 * rng.standard_normal((8, dim))).astype(np.float32)  # near-duplicates
    x[1] = 0
    whole = counted_whole_rows(monkeypatch)
    idx, sims = exact_knn(torch.from_numpy(x), k, block=block)
    ref_idx, ref_sims = grid_brute_force(x, k)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_array_equal(sims.numpy(), ref_sims.astype(np.float32))
    assert idx[3, :4].tolist() == [10, 11, 12, 13] and idx[10, :4].tolist() == [3, 11, 12, 13]
    assert 1 in whole and 5 in whole and 20 in whole  # ties run past the candidates: recomputed whole
    assert len(whole) < n  # the others are certified from their candidates


def test_permuting_the_rows_permutes_the_values_and_the_neighbours_above_a_tie() -> None:
    """Ties go to the lower index, so only the neighbours tied at the k-th value may change with the order."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((60, 24)).astype(np.float32)
    x[[7, 30, 41]] = x[2]
    idx, sims = exact_knn(x, 6, block=16)
    perm = rng.permutation(60)
    pidx, psims = exact_knn(x[perm], 6, block=16)
    np.testing.assert_array_equal(psims.numpy(), sims.numpy()[perm])
    for row in range(60):
        above = psims[row] > psims[row, -1]
        assert set(perm[pidx[row][above].numpy()].tolist()) == set(idx[perm[row]][above].tolist())


def test_screen_error_bounds_float32_products() -> None:
    rng = np.random.default_rng(4)
    for dim in (8, 300, 2304):
        unit = unit_rows(torch.from_numpy(rng.standard_normal((200, dim)).astype(np.float32) ** 3))
        screen = (unit @ unit.T).double()
        exact = unit.double() @ unit.double().T
        assert float((screen - exact).abs().max()) <= rescore.screen_error(dim, torch.device("cpu")) / 4


def test_reduced_precision_products_certify_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        assert rescore.screen_error(16, torch.device("cpu")) == float("inf")
        x = np.random.default_rng(5).standard_normal((40, 16)).astype(np.float32)
        whole = counted_whole_rows(monkeypatch)
        idx, _ = exact_knn(x, 3)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert sorted(whole) == list(range(40))
    np.testing.assert_array_equal(idx.numpy(), grid_brute_force(x, 3)[0])
