"""Exact cosine k-nearest neighbours as a blocked matrix product.

Rows are L2-normalised in float32 (rows of zeros stay zero: similarity 0 with anything). The similarity of two
features is the float64 dot product of their float32 unit rows, snapped to the tie grid
(:func:`~sae_assets.core.common.ties.snap`, 2^-30): values on one grid point are ties, broken by index ascending,
so rounding noise cannot reorder equal similarities (duplicate decoder rows) and the result is deterministic. A
feature is never its own neighbour.

The pairs are screened in float32: the similarity matrix is symmetric, so only its blocks on and above the diagonal
are computed, each ``block x block`` product serving the rows of both blocks (half the multiply-adds of a full
product), and a running top-(k + slack) per row is merged block by block. The candidates are then re-scored in
float64 and the answer certified against the screen's rounding
(:func:`~sae_assets.core.feature_map.knn_rescore.rescored_neighbours`). Memory is ``n x (k + slack)`` plus a few
``block x block`` matrices and 64 MiB of re-scoring whatever ``n``, on whatever device the vectors are on.
"""

from __future__ import annotations

import numpy as np
import torch

from sae_assets.core.common.progress import Progress, Report
from sae_assets.core.common.ranking import top_order
from sae_assets.core.common.similarity import unit_rows
from sae_assets.core.feature_map.knn_rescore import rescored_neighbours

DEFAULT_BLOCK = 2048
"""Rows per block. A diagonal block's product is computed whole though half of it repeats the other half, so
smaller blocks compute less in all (16,384 rows: 151M products at 2,048 against 168M at 4,096, 134M the least)
while each product stays large enough to run at full speed; 7.5 vs 8.6 s (median of four) for 16,384 x 2,304
on 2 cores (the screen's float32 products)."""
SCREEN_SLACK = 16
"""Candidates the float32 screen keeps per row beyond k (or k // 2 when more): enough that the k-th neighbour's
float64 value clears the last candidate by the screen's rounding bound (~3e-4 at 2,304 dimensions) on almost every
row; the rows where it does not are recomputed whole."""


def check_vectors(vectors: torch.Tensor, k: int) -> None:
    """Raise ValueError when ``vectors [n, dim]`` holds NaN/Inf, or has ``n <= k`` rows (k others needed)."""
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be [n, dim], got shape {tuple(vectors.shape)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    # NaN and Inf reach a row's sum (a sum can also overflow from finite values: those rows are checked entry by
    # entry), so only the flagged rows are read twice: 5 ms instead of 120 at 16,384 x 2,304
    flagged = (~torch.isfinite(vectors.sum(dim=1))).nonzero().flatten()
    bad = flagged[~torch.isfinite(vectors[flagged]).all(dim=1)].tolist()
    if bad:
        first = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(f"decoder has NaN or Inf values in {len(bad)} of {vectors.shape[0]} rows "
                         f"(rows {first}); re-materialize sae_decoder from a healthy SAE.")
    n = vectors.shape[0]
    if n <= k:
        raise ValueError(f"layer has {n} features, fewer than k+1 = {k + 1}: k = {k} nearest neighbours "
                         "besides the feature itself need at least k+1 features; lower k_edges / n_neighbors.")


def ordered_top(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores [b, c]`` -> ``(values [b, k'], columns [b, k'])``, ``k' = min(k, c)``: the k' highest per row by
    descending score, ties broken by column ascending (:func:`~sae_assets.core.common.ranking.top_order`; cosines
    of decoder rows rarely tie, so one candidate beyond the k is slack enough)."""
    cols = top_order(scores, min(k, scores.shape[1]), slack=1)
    return scores.gather(1, cols), cols


def _merge(best: tuple[torch.Tensor, torch.Tensor], new: tuple[torch.Tensor, torch.Tensor],
           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``(values, indices)`` lists per row over disjoint indices -> the first k by value desc, index asc."""
    vals, idx = torch.cat([best[0], new[0]], dim=1), torch.cat([best[1], new[1]], dim=1)
    idx, by_index = idx.sort(dim=1)
    vals = vals.gather(1, by_index)
    order = vals.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return vals.gather(1, order), idx.gather(1, order)


def exact_knn(vectors: torch.Tensor | np.ndarray, k: int, block: int = DEFAULT_BLOCK,
              device: torch.device | str | None = None,
              report: Report | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine k-NN of ``vectors [n, dim]``, self excluded.

    Returns ``indices [n, k]`` (int64, row positions) and ``similarities [n, k]`` (float32 of the snapped float64
    values), each row ordered by descending similarity with ties (equal snapped values) broken by index ascending, on
    ``device`` (default: the vectors' own).
    Raises ValueError for NaN/Inf rows or ``n <= k``. ``report`` gets progress (block pairs done, rate, ETA)
    at most every 10 s.
    """
    v = torch.as_tensor(vectors)
    if device is not None:
        v = v.to(device)
    check_vectors(v, k)
    unit = unit_rows(v.to(torch.float32))  # [n, dim]
    n, dev, step = unit.shape[0], unit.device, max(1, block)
    wide = min(n - 1, k + max(SCREEN_SLACK, k // 2))  # the screen's candidates per row
    best_vals = torch.full((n, wide), -torch.inf, dtype=torch.float32, device=dev)
    best_idx = torch.full((n, wide), n, dtype=torch.int64, device=dev)  # placeholders sort after real indices
    # one product buffer for every block pair: a fresh block x block matrix per pair is new memory each time, which
    # the OS maps and zeroes page by page
    buffer = torch.empty((min(step, n), min(step, n)), dtype=torch.float32, device=dev)
    n_blocks = -(-n // step)
    progress = Progress(f"exact {k}-NN of {n:,} vectors", n_blocks * (n_blocks + 1) // 2, "block pairs", report)
    for a in range(0, n, step):
        a_end = min(a + step, n)
        for c in range(a, n, step):
            c_end = min(c + step, n)
            scores = torch.mm(unit[a:a_end], unit[c:c_end].T, out=buffer[: a_end - a, : c_end - c])  # [bA, bC]
            if a == c:
                scores.fill_diagonal_(-torch.inf)  # never its own neighbour (n > k leaves k finite others)
            vals, cols = ordered_top(scores, wide)
            best_vals[a:a_end], best_idx[a:a_end] = _merge((best_vals[a:a_end], best_idx[a:a_end]),
                                                           (vals, cols + c), wide)
            if a != c:  # the same products, seen from the rows of block c
                vals, cols = ordered_top(scores.T, wide)
                best_vals[c:c_end], best_idx[c:c_end] = _merge((best_vals[c:c_end], best_idx[c:c_end]),
                                                               (vals, cols + a), wide)
            progress.advance(1)
    indices, sims = rescored_neighbours(unit, best_idx, best_vals, k)
    if progress.elapsed_s >= progress.every_s:
        progress.finish()
    return indices, sims.to(torch.float32)
