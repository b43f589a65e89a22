"""Partial ranking against a full stable sort."""

from __future__ import annotations

import numpy as np
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
