"""Partial ranking: the first k of a stable descending sort without sorting every column (SFAL's NDCG, k-NN)."""

from __future__ import annotations

import torch


def top_order(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``scores [b, n]`` -> ``[b, k]`` column indices of the k highest per row, by descending score with ties
    broken by index ascending: the first k of a stable descending sort, without sorting all n."""
    kth = scores.topk(k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)  # [b, 1]
    above = scores > kth
    tied = scores == kth
    room = k - above.sum(dim=1, keepdim=True)  # how many tied entries still fit, lowest index first
    take = above | (tied & (tied.cumsum(dim=1) <= room))
    cols = take.nonzero()[:, 1].view(scores.shape[0], k)  # exactly k per row, index ascending
    by_score = torch.sort(scores.gather(1, cols), dim=1, descending=True, stable=True).indices
    return cols.gather(1, by_score)
