"""Partial ranking against a full stable sort, for torch rows (SFAL, k-NN) and numpy rows (the viewer) alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae_assets.core.common.ranking import top_order


def test_top_order_is_the_head_of_a_stable_sort() -> None:
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(np.round(rng.standard_normal((6, 40)), 1))  # many ties
    scores[2] = 0.0  # a row that is all ties
    full = torch.sort(scores, dim=1, descending=True, stable=True).indices
    for k in (1, 7, 39, 40):
        assert torch.equal(top_order(scores, k), full[:, :k])


def test_top_order_on_long_rows_with_ties_at_the_boundary() -> None:
    rng = np.random.default_rng(5)
    scores = torch.from_numpy(rng.integers(0, 30, (64, 3000)).astype(np.float64))  # ties everywhere
    scores[3] = 0.0  # all tied (a feature without an explanation)
    scores[4, :50] = torch.arange(50, dtype=torch.float64) + 100  # a clean top 50, ties below it
    scores[5, -1] = -torch.inf
    full = torch.sort(scores, dim=1, descending=True, stable=True).indices
    for k in (1, 50, 1023, 2999, 3000):
        assert torch.equal(top_order(scores, k), full[:, :k]), k
    distinct = torch.from_numpy(rng.standard_normal((8, 3000)))  # no ties: the fast path only
    assert torch.equal(top_order(distinct, 1023), torch.sort(distinct, dim=1, descending=True).indices[:, :1023])


def test_top_order_every_path_and_slack_equals_a_stable_sort() -> None:
    """Rows that leave the plain sorted-topk path: ties inside the top k, ties running past the candidates (found
    in the first 4k columns or only far to the right), -0.0 tied with 0.0, NaN; for every slack."""
    rng = np.random.default_rng(11)
    scores = torch.from_numpy(rng.standard_normal((10, 5000)))
    scores[0, [7, 900, 4000]] = 9.0  # a tie inside the top k
    scores[1] = 0.0  # all tied: its ties are in the first 4k columns
    scores[2, :4500] = -5.0
    scores[2, 4500:] = 1.0  # the k-th value's ties only far to the right
    scores[3, ::2] = 0.0
    scores[3, 1::2] = -0.0  # equal to 0.0: ties by index, whatever the sign bit
    scores[4, 17] = float("nan")
    scores[5, :] = torch.from_numpy(rng.integers(0, 3, 5000).astype(np.float64))  # three huge tie groups
    full = torch.sort(scores, dim=1, descending=True, stable=True).indices
    for k in (1, 20, 1023):
        for slack in (None, 1, 16, 300):
            assert torch.equal(top_order(scores, k, slack=slack), full[:, :k]), (k, slack)


def test_numpy_rows_take_the_order_of_torch_rows() -> None:
    """The viewer's numpy rows: short rows sorted whole, long ones cut by a partition first; ties by column (-0.0
    tied with 0.0), NaN first, as the torch paths and torch's stable sort order them."""
    rng = np.random.default_rng(13)
    scores = np.round(rng.standard_normal((8, 300)), 1)
    scores[1] = 0.0
    scores[2, ::2] = -0.0
    scores[3, [5, 250]] = np.nan
    scores[4, :] = rng.integers(0, 3, 300)
    scores[5, 290:] = 9.0  # the top ties all at the end
    full = torch.sort(torch.from_numpy(scores), dim=1, descending=True, stable=True).indices.numpy()
    for k in (0, 1, 10, 74, 75, 76, 299, 300):  # rows longer than 4k are cut by a partition: k = 74 is, 75 not
        got = top_order(scores, k)
        assert got.dtype == np.int64 and got.shape == (8, k)
        assert np.array_equal(got, full[:, :k]), k
        if k:
            assert np.array_equal(got, top_order(torch.from_numpy(scores), k).numpy()), k
    with pytest.raises(ValueError, match="k must be in 0..300"):
        top_order(scores, 301)
