"""The torch paths of :func:`~sae_assets.core.common.ranking.top_order` (SFAL's NDCG, the k-NN): the first k of a
stable descending sort without sorting every column."""

from __future__ import annotations

import numpy as np
import torch

COMPILED_MIN_COLUMNS = 8192
"""float64 CPU rows at least this long (SFAL's) go to the compiled selection
(:mod:`~sae_assets.core.common.row_selection`), after a one-time compile (~20 s on 2 cores, cached on disk) that
shorter rows, e.g. the demo's 2,048 features, never pay."""


def torch_top_order(scores: torch.Tensor, k: int, slack: int | None = None) -> torch.Tensor:
    """``scores [b, n]`` -> ``[b, k]`` column indices of the k highest per row, by descending score with ties
    broken by index ascending: the first k of a stable descending sort, without sorting all n.

    One sorted ``topk(k + slack)`` (default slack: k/4, at least 64) per row. A row whose first k + 1 values are
    all different is done: its k-th value is above every other entry and no two of its top k tie. Rows with a tie
    there have their candidates ordered by (value descending, column ascending), exact whenever the last
    candidate is below the k-th value, i.e. every entry tied with the k-th value is a candidate; rows with more
    ties than that at the boundary (all-equal rows, e.g. a feature without an explanation) are completed by
    :func:`_fill_ties`, and rows holding NaN take a full stable sort. float64 CPU rows of at least
    :data:`COMPILED_MIN_COLUMNS` take :func:`~sae_assets.core.common.row_selection.top_rows` instead (the same
    result).
    """
    b, n = scores.shape
    if scores.device.type == "cpu" and scores.dtype == torch.float64 and n >= COMPILED_MIN_COLUMNS and 1 <= k <= n \
            and not scores.requires_grad:
        return _compiled_order(scores, k)
    extra = min(n - k, max(64, k // 4) if slack is None else slack)
    if extra <= 0:
        return _stable_head(scores, k)
    vals, cols = scores.topk(k + extra, dim=1, sorted=True)  # descending; the order of equal values unspecified
    top = cols[:, :k].clone()
    unsure = (vals[:, 1 : k + 1] == vals[:, :k]).any(dim=1)
    nan = vals[:, 0].isnan()  # topk, like sort, puts NaN first
    if nan.any():
        rows = nan.nonzero().flatten()
        top[rows] = _stable_head(scores[rows], k)
        unsure &= ~nan
    if unsure.any():
        rows = unsure.nonzero().flatten()
        top[rows] = _candidate_order(scores, rows, _take(vals, rows), _take(cols, rows), k)
    return top


def prepare_top_order(n: int, dtype: torch.dtype, device: torch.device | str) -> None:
    """Load the compiled ranking that :func:`torch_top_order` takes for rows of ``n`` columns of ``dtype`` on ``device``
    (compiling it the first time on a machine: ~20 s on 2 cores, then cached on disk), so that a loop's first step
    does not carry it; nothing for rows it would not take."""
    if torch.device(device).type == "cpu" and dtype == torch.float64 and n >= COMPILED_MIN_COLUMNS:
        _compiled_order(torch.zeros((1, COMPILED_MIN_COLUMNS), dtype=torch.float64), 1)


def _stable_head(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The first k columns of each row's full stable descending sort (NaN first): rows no faster path orders."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def _compiled_order(scores: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`torch_top_order` by :func:`~sae_assets.core.common.row_selection.top_rows` on the CPU's threads; rows
    holding NaN take a full stable sort, as in the torch path."""
    from sae_assets.core.common.row_selection import top_rows

    top = torch.from_numpy(top_rows(np.ascontiguousarray(scores.numpy()), k, torch.get_num_threads()))
    nan = top[:, 0] < 0
    if nan.any():
        rows = nan.nonzero().flatten()
        top[rows] = _stable_head(scores[rows], k)
    return top


def _take(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``t[rows]`` for increasing ``rows``, without a copy when they are all of t's rows (often: Phi's rows all tie)."""
    return t if rows.shape[0] == t.shape[0] else t.index_select(0, rows)


def _candidate_order(scores: torch.Tensor, rows: torch.Tensor, vals: torch.Tensor, cols: torch.Tensor,
                     k: int) -> torch.Tensor:
    """:func:`torch_top_order` for the ``rows`` of ``scores`` with ties among their sorted candidates ``vals``, ``cols``
    ``[len(rows), k + slack]``."""
    n = scores.shape[1]
    runs = torch.cat([torch.zeros_like(cols[:, :1]), (vals[:, 1:] != vals[:, :-1]).cumsum(dim=1)], dim=1)
    ranked = cols.gather(1, (runs * n + cols).argsort(dim=1))  # distinct keys: value descending, column ascending
    top = ranked[:, :k].clone()
    open_end = vals[:, k - 1] == vals[:, -1]  # the k-th value may go on outside the candidates
    if open_end.any():
        at = open_end.nonzero().flatten()
        kth = vals[at, k - 1 : k]
        top[at] = _fill_ties(scores, rows[at], top[at], (vals[at] > kth).sum(dim=1), kth)
    return top


def _fill_ties(scores: torch.Tensor, rows: torch.Tensor, head: torch.Tensor, above: torch.Tensor,
               kth: torch.Tensor) -> torch.Tensor:
    """:func:`torch_top_order` for the ``rows`` of ``scores`` whose k-th value ``kth [b, 1]`` ties with entries
    beyond the candidates: the ``above [b]`` entries greater than it (ranked first in ``head [b, k]``), then the
    lowest-index entries equal to it, as many as fit. Rows that find enough of them in their first 4k columns
    (all-equal rows) read no further; only those columns of them are compared."""
    b, k = head.shape
    out = head.clone()
    width = min(scores.shape[1], 4 * k)
    tied_prefix = _take(scores[:, :width], rows) == kth  # [b, width]
    in_prefix = tied_prefix.sum(dim=1) >= k - above
    at = in_prefix.nonzero().flatten()
    if at.numel():
        out[at] = _place_ties(_take(tied_prefix, at), out[at], above[at])
    at = (~in_prefix).nonzero().flatten()
    if at.numel():
        out[at] = _place_ties(scores.index_select(0, rows[at]) == kth[at], out[at], above[at])
    return out


def _place_ties(tied: torch.Tensor, head: torch.Tensor, above: torch.Tensor) -> torch.Tensor:
    """``head [b, k]`` with positions ``above`` onwards filled by the lowest columns where ``tied [b, n]`` is true
    (there are enough of them)."""
    b, k = head.shape
    row, col = tied.nonzero().unbind(dim=1)  # row-major: within a row, columns ascending
    per_row = torch.bincount(row, minlength=b)
    rank = torch.arange(row.shape[0], device=row.device) - (per_row.cumsum(0) - per_row)[row]
    keep = rank < (k - above)[row]
    head[row[keep], (above[row] + rank)[keep]] = col[keep]
    return head
