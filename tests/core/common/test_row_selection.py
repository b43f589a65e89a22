"""The compiled row selection against a full stable sort, and top_order's dispatch to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sae_assets.core.common.ranking as ranking
import sae_assets.core.common.ranking_torch as ranking_torch
from sae_assets.core.common.row_selection import SAMPLE, top_rows


def _stable_head(scores: np.ndarray, k: int) -> np.ndarray:
    """The first k columns of each row's stable descending sort (ties by column ascending), as torch orders."""
    return torch.sort(torch.from_numpy(scores), dim=1, descending=True, stable=True).indices[:, :k].numpy()


def _rows_of_every_kind(rng: np.random.Generator, n: int) -> np.ndarray:
    scores = rng.standard_normal((12, n))
    scores[1] = 0.0  # all tied but one: an unexplained feature's cosine row, diagonal at -inf
    scores[1, 3] = -np.inf
    scores[2] = rng.integers(0, 5, n)  # ties everywhere, across the k-th value
    step = n // SAMPLE
    scores[3, ::step] = 50.0 + np.arange(len(scores[3, ::step]))  # only the sampled columns high: the sample's
    # threshold leaves fewer than k candidates, so every column is one
    scores[4, : n // 2] = -0.0  # -0.0 ties with 0.0
    scores[4, n // 2 :] = 0.0
    scores[4, [5, n - 5]] = 1.0
    scores[5, [0, n - 1]] = np.inf
    scores[6, 10:20] = 7.0  # ties inside the top k
    scores[7] = np.round(scores[7], 1)  # ties at every value
    return scores


def test_top_rows_is_the_head_of_a_stable_sort() -> None:
    rng = np.random.default_rng(7)
    scores = _rows_of_every_kind(rng, 9000)
    for k in (1, 13, 1023, 4600, 8999, 9000):
        for threads in (1, 2):
            assert np.array_equal(top_rows(scores, k, threads), _stable_head(scores, k)), (k, threads)


def test_top_rows_marks_nan_rows_and_rejects_bad_k() -> None:
    scores = np.random.default_rng(2).standard_normal((3, 2000))
    scores[1, 77] = np.nan
    out = top_rows(scores, 10)
    assert (out[1] == -1).all()
    assert np.array_equal(out[[0, 2]], _stable_head(scores[[0, 2]], 10))
    with pytest.raises(ValueError, match="k must be in 1..2000"):
        top_rows(scores, 2001)


def test_top_order_takes_the_compiled_path_on_long_cpu_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same result either way, NaN rows included (sorted by torch, NaN first)."""
    rng = np.random.default_rng(4)
    scores = torch.from_numpy(_rows_of_every_kind(rng, 3000))
    scores[8, 100] = torch.nan
    expected = ranking.top_order(scores, 700)  # 3,000 columns: the torch path
    called: list[int] = []
    compiled = ranking_torch._compiled_order
    monkeypatch.setattr(ranking_torch, "_compiled_order", lambda s, k: called.append(k) or compiled(s, k))
    monkeypatch.setattr(ranking_torch, "COMPILED_MIN_COLUMNS", 2048)
    assert torch.equal(ranking.top_order(scores, 700), expected)
    assert called == [700]
    assert torch.equal(expected[8], torch.sort(scores[8], descending=True, stable=True).indices[:700])


def test_prepare_top_order_loads_the_compiled_path_only_where_top_order_takes_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[tuple[int, ...]] = []
    monkeypatch.setattr(ranking_torch, "_compiled_order", lambda s, k: called.append(tuple(s.shape)))
    n = ranking_torch.COMPILED_MIN_COLUMNS
    ranking_torch.prepare_top_order(n - 1, torch.float64, "cpu")  # short rows: torch's path
    ranking_torch.prepare_top_order(n, torch.float32, "cpu")  # float32: torch's path
    ranking_torch.prepare_top_order(n, torch.float64, "meta")  # another device: torch's path
    assert called == []
    ranking_torch.prepare_top_order(4 * n, torch.float64, torch.device("cpu"))
    assert called == [(1, n)]
