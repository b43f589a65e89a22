"""Partial ranking: the first k of each row's stable descending sort, without sorting every column.

One function for numpy rows (the viewer's short lists of partners and neighbours) and torch rows (SFAL's NDCG, the
k-NN). This module imports no torch: tensors go to :mod:`~sae_assets.core.common.ranking_torch`, loaded only by a
caller that already holds a tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

import numpy as np

if TYPE_CHECKING:
    import torch

CANDIDATES_FACTOR = 4
"""numpy rows longer than this many times k have their candidates cut by a partition before they are sorted."""


@overload
def top_order(scores: np.ndarray, k: int, slack: int | None = None) -> np.ndarray: ...


@overload
def top_order(scores: torch.Tensor, k: int, slack: int | None = None) -> torch.Tensor: ...


def top_order(scores: np.ndarray | torch.Tensor, k: int,
              slack: int | None = None) -> np.ndarray | torch.Tensor:
    """``scores [b, n]`` -> ``[b, k]`` (int64) column indices of the k highest per row, ``1 <= k <= n``
    (numpy: ``0 <= k <= n``): the first k of a stable descending sort, i.e. by descending score with ties broken by
    column ascending, and NaN before every number (as torch's descending sort puts it).

    numpy rows: a partition keeps the entries at or above the k-th largest value (every entry that can be in the
    first k), which alone are sorted; a row holding NaN is sorted whole. torch rows:
    :func:`~sae_assets.core.common.ranking_torch.torch_top_order` (``slack``: its extra candidates; unused here).
    """
    if isinstance(scores, np.ndarray):
        return _numpy_top_order(scores, k)
    from sae_assets.core.common.ranking_torch import torch_top_order

    return torch_top_order(scores, k, slack)


def _numpy_top_order(scores: np.ndarray, k: int) -> np.ndarray:
    b, n = scores.shape
    if not 0 <= k <= n:
        raise ValueError(f"k must be in 0..{n}, not {k}")
    out = np.empty((b, k), dtype=np.int64)
    for r, row in enumerate(scores):
        nan = np.isnan(row)
        if 0 < k and CANDIDATES_FACTOR * k < n and not nan.any():
            cut = np.partition(row, n - k)[n - k]  # the k-th largest value
            cols = np.flatnonzero(row >= cut)
        else:
            cols = np.arange(n)
        values = row[cols]
        out[r] = cols[np.lexsort((cols, -values, ~nan[cols]))[:k]]  # NaN first, then value desc, column asc
    return out
