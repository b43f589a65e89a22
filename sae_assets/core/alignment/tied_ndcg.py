"""Tie-aware NDCG@top_n of a block of rows (McSherry & Najork 2008), SFAL's scorer for one block.

Rows hold snapped similarities (:func:`~sae_assets.core.common.ties.snap`) with -inf at self-pairs, so equal values
are ties and self never reaches a top_n <= d - 1. Tie groups are the runs of equal values in a row's descending
order; a group may straddle the cut-off (some members before position top_n, some after), and then its size and
members are read from the whole row. Only sums inside runs and comparisons are used, never differences of prefix
sums (gains span 1.1^1023 ~ 1e42 down to ~0.1), and no atomic adds, so a block's result is deterministic on any device.
"""

from __future__ import annotations

import torch

from sae_assets.core.common.ranking import top_order


def run_ids(values: torch.Tensor) -> torch.Tensor:
    """``values [b, k]``, each row in descending order -> ``[b, k]`` int64: which run of equal values each position
    is in, counted from 0 per row."""
    change = (values[:, 1:] != values[:, :-1]).to(torch.int64)
    first = torch.zeros((values.shape[0], 1), dtype=torch.int64, device=values.device)
    return torch.cat([first, change.cumsum(dim=1)], dim=1)


def run_totals(weights: torch.Tensor, runs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weights [b, k]`` and their :func:`run_ids` -> (sum of the weights of each position's run, the run's length),
    both ``[b, k]`` in ``weights``' dtype, at every position of the run. Only rows with a run longer than one are
    summed, by a segmented scan: ceil(log2(longest run)) steps, each adding within runs only."""
    b, k = weights.shape
    total, size = weights.clone(), torch.ones_like(weights)
    rows = (runs[:, -1] < k - 1).nonzero().flatten()  # rows with a tie among their first k
    if rows.numel() == 0:
        return total, size
    runs, part = runs.index_select(0, rows), weights.index_select(0, rows)
    position = torch.arange(k, device=weights.device).expand(rows.shape[0], k)
    change = runs[:, 1:] != runs[:, :-1]
    edge = torch.ones_like(runs[:, :1], dtype=torch.bool)
    end = torch.where(torch.cat([change, edge], dim=1), position, k)
    end = end.flip(1).cummin(dim=1).values.flip(1)  # each position's run's last position
    start = torch.where(torch.cat([edge, change], dim=1), position, 0).cummax(dim=1).values
    length = end - start + 1
    step, longest = 1, int(length.max())
    while step < longest:
        same = runs[:, step:] == runs[:, :-step]
        part[:, step:] = part[:, step:] + torch.where(same, part[:, :-step], 0.0)
        step *= 2
    total[rows], size[rows] = part.gather(1, end), length.to(weights.dtype)
    return total, size


def cut_groups(scores: torch.Tensor, order: torch.Tensor, top_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose tie group at position ``top_n - 1`` goes on past the cut-off: ``(rows [c], tied [c, d])``, with
    ``tied`` true at every member of that group in the row. ``order [b, top_n + 1]`` is the rows' first
    ``top_n + 1`` columns (:func:`top_order`), or only ``top_n`` where nothing follows (then no row is cut)."""
    if order.shape[1] == top_n:
        return order[:0, 0], scores[:0].to(torch.bool)
    edge = scores.gather(1, order[:, top_n - 1 : top_n + 1])
    rows = (edge[:, 1] == edge[:, 0]).nonzero().flatten()
    return rows, scores.index_select(0, rows) == edge.index_select(0, rows)[:, :1]


def tied_ndcg(phi: torch.Tensor, semantic: torch.Tensor, gains: torch.Tensor, discount: torch.Tensor,
              relevance: torch.Tensor) -> torch.Tensor:
    """Tie-aware NDCG@top_n ``[b]`` of rows ``phi`` and ``semantic`` ``[b, d]`` (snapped, -inf at self), with
    ``gains [top_n]`` (the gain of each semantic rank) and ``discount [top_n]`` (1 / log2(rank + 2)).
    ``relevance [b, d]`` float64 is scratch space: all zero on entry and again on return.

    Semantic: each member of a group of tied neighbours has the mean gain of the ranks the group spans (ranks from
    top_n on gain 0, so a group straddling the cut-off spreads the gains of its ranks before it over all its
    members). Phi: each position of a group of tied neighbours counts the mean relevance of the group's members
    (a straddling group: of all its members, those ranked past the cut-off included), times that position's
    discount. The ideal DCG is the semantic order's own. Values lie in [0, 1] (rounding above 1 is clipped)."""
    b, d = phi.shape
    top_n = gains.shape[0]
    wide = top_n + 1 if top_n < d - 1 else top_n  # one more position: does the group at the cut-off go on?
    semantic_order = top_order(semantic, wide)
    runs = run_ids(semantic.gather(1, semantic_order[:, :top_n]))
    total, size = run_totals(gains.expand(b, -1), runs)
    rows, tied = cut_groups(semantic, semantic_order, top_n)
    if rows.numel():  # the group's ranks past the cut-off gain nothing but share its total
        size[rows] = torch.where(runs[rows] == runs[rows, -1:], tied.sum(dim=1, keepdim=True).to(size.dtype),
                                 size[rows])
    rel = total / size  # [b, top_n]: relevance of the semantic top_n
    ideal = (rel * discount).sum(dim=1)
    relevance.scatter_(1, semantic_order[:, :top_n], rel)
    if rows.numel():
        relevance[rows] = torch.where(tied, rel[rows, -1:], relevance[rows])

    order = top_order(phi, wide)
    runs = run_ids(phi.gather(1, order[:, :top_n]))
    total, size = run_totals(relevance.gather(1, order[:, :top_n]), runs)
    cut, tied = cut_groups(phi, order, top_n)
    if cut.numel():  # the mean over every member of the group, those past the cut-off included
        in_last = runs[cut] == runs[cut, -1:]
        whole = relevance.index_select(0, cut).mul_(tied).sum(dim=1, keepdim=True)
        total[cut] = torch.where(in_last, whole, total[cut])
        size[cut] = torch.where(in_last, tied.sum(dim=1, keepdim=True).to(size.dtype), size[cut])
    dcg = (total / size * discount).sum(dim=1)

    relevance.scatter_(1, semantic_order[:, :top_n], 0.0)  # back to all zero for the next block
    relevance.index_fill_(0, rows, 0.0)
    return (dcg / ideal).clamp_(max=1.0)  # a DCG equal to the ideal may come out ~1e-16 above it from the means
