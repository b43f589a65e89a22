"""Exact blocked cosine k-NN against a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae_assets.core.feature_map.knn import exact_knn, ordered_top


def brute_force(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 cosine k-NN, self excluded, by similarity descending then index ascending."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    order = np.stack([np.lexsort((np.arange(len(x)), -row))[:k] for row in sims])
    return order, np.take_along_axis(sims, order, 1)


def tied_vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    """Rows with four entries of +-1 (norm 2): unit rows and their products are exact in float32, and
    similarities take few values, so ties are everywhere, across block boundaries included."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, dim), dtype=np.float32)
    for row in x:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    return x


@pytest.mark.parametrize(("n", "k", "block"), [(60, 10, 7), (61, 10, 16), (97, 5, 4096), (40, 39, 9)])
def test_ties_match_brute_force_exactly(n: int, k: int, block: int) -> None:
    x = tied_vectors(n)
    x[5] = x[3]  # exact duplicates: similarity 1 with each other
    idx, sims = exact_knn(torch.from_numpy(x), k, block=block)
    ref_idx, ref_sims = brute_force(x.astype(np.float64), k)
    assert idx.dtype == torch.int64 and sims.dtype == torch.float32 and idx.shape == (n, k)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_array_equal(sims.numpy(), ref_sims.astype(np.float32))
    assert not (idx.numpy() == np.arange(n)[:, None]).any()  # never itself
    assert idx[3, 0] == 5 and idx[5, 0] == 3


def test_random_vectors_and_zero_rows() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 12)).astype(np.float32)
    x[7] = 0  # a zero row: similarity 0 with everything
    idx, sims = exact_knn(x, 6, block=16)
    ref_idx, ref_sims = brute_force(x.astype(np.float64), 6)
    np.testing.assert_array_equal(idx.numpy()[np.arange(50) != 7], ref_idx[np.arange(50) != 7])
    np.testing.assert_allclose(sims.numpy(), ref_sims, atol=1e-6)
    np.testing.assert_array_equal(idx[7].numpy(), np.arange(6))  # all tied at 0: lowest indices


def test_ordered_top_breaks_boundary_ties_by_index() -> None:
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    vals, cols = ordered_top(scores, 3)
    assert cols.tolist() == [[1, 0, 2], [0, 1, 2]]
    assert vals[0].tolist() == pytest.approx([0.9, 0.5, 0.5])


def test_nan_rows_are_named() -> None:
    x = np.ones((30, 4), dtype=np.float32)
    x[[2, 9], 1] = np.nan
    x[4, 0] = np.inf
    with pytest.raises(ValueError, match=r"decoder has NaN or Inf values in 3 of 30 rows \(rows 2, 4, 9\)"):
        exact_knn(x, 5)


def test_too_few_features() -> None:
    with pytest.raises(ValueError, match="layer has 10 features, fewer than k\\+1 = 11"):
        exact_knn(np.eye(10, dtype=np.float32), 10)
    idx, _ = exact_knn(np.eye(11, dtype=np.float32), 10)  # n = k + 1: every other feature
    assert sorted(idx[0].tolist()) == list(range(1, 11))


def test_rows_that_overflow_their_sum_are_not_mistaken_for_nan_rows() -> None:
    x = np.ones((12, 4), dtype=np.float32)
    x[2] = 3e38  # finite, but the row's float32 sum overflows to inf
    idx, _ = exact_knn(x, 3)
    assert idx.shape == (12, 3)
    x[5, 1] = np.inf
    x[7, 0] = np.nan
    with pytest.raises(ValueError, match=r"2 of 12 rows \(rows 5, 7\)"):
        exact_knn(x, 3)
