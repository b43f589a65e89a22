"""Partial ranking: the first k of a stable descending sort without sorting every column (SFAL's NDCG, k-NN)."""

from __future__ import annotations

import torch


def top_order(scores: torch.Tensor, k: int, slack: int | None = None) -> torch.Tensor:
    """``scores [b, n]`` -> ``[b, k]`` column indices of the k highest per row, by descending score with ties
    broken by index ascending: the first k of a stable descending sort, without sorting all n.

    One ``topk(k + slack)`` (default slack: k/4, at least 64) gives each row's candidates; sorted by column and
    then stably by value, their first k are the row's answer whenever the last candidate is below the k-th
    value, i.e. every entry tied with the k-th value is a candidate. Rows with more ties than that at the
    boundary (all-equal rows, e.g. a feature without an explanation) take :func:`_tied_top_order`.
    """
    b, n = scores.shape
    extra = min(n - k, max(64, k // 4) if slack is None else slack)
    if extra <= 0:
        return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    cols = scores.topk(k + extra, dim=1, sorted=False).indices.sort(dim=1).values  # candidates, by column
    vals = scores.gather(1, cols)
    vals, order = vals.sort(dim=1, descending=True, stable=True)  # ties stay by column
    top = cols.gather(1, order[:, :k])
    tied = vals[:, k - 1] == vals[:, -1]  # the k-th value may continue outside the candidates
    if tied.any():
        rows = tied.nonzero().flatten()
        top[rows] = _tied_top_order(scores[rows], k, vals[rows, k - 1 : k])
    return top


def _tied_top_order(scores: torch.Tensor, k: int, kth: torch.Tensor) -> torch.Tensor:
    """:func:`top_order` for rows whose k-th value ``kth [b, 1]`` ties with entries outside the top k: every
    entry above it, then the lowest-index entries equal to it."""
    above = scores > kth
    tied = scores == kth
    room = k - above.sum(dim=1, keepdim=True)  # how many tied entries still fit, lowest index first
    take = above | (tied & (tied.cumsum(dim=1) <= room))
    cols = take.nonzero()[:, 1].view(scores.shape[0], k)  # exactly k per row, index ascending
    by_score = torch.sort(scores.gather(1, cols), dim=1, descending=True, stable=True).indices
    return cols.gather(1, by_score)
