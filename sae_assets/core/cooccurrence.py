"""Feature co-occurrence over non-overlapping token windows (SFAL's definition).

A document (BOS dropped, truncated to the scan's context) is cut into non-overlapping windows of
``k`` tokens, the trailing remainder dropped. A feature is *present* in a window if it fires anywhere
in it. ``C[i, j]`` counts the windows where both ``i`` and ``j`` are present; the diagonal holds each
feature's marginal count. Counts are accumulated densely on the device (``d_sae^2`` int32) and stored
sparsely: the upper triangle's non-zero entries.
"""

from __future__ import annotations

import polars as pl
import torch


def window_presence(feats: torch.Tensor, k: int, threshold: float = 0.0) -> torch.Tensor:
    """``feats [n_tokens, d_sae]`` of one document (BOS already dropped) -> ``[n_windows, d_sae]`` bool."""
    n_windows = feats.shape[0] // k
    if n_windows == 0:
        return torch.zeros((0, feats.shape[1]), dtype=torch.bool, device=feats.device)
    windows = feats[: n_windows * k].reshape(n_windows, k, feats.shape[1])
    return windows.amax(dim=1) > threshold


class CooccurrenceCounter:
    """Accumulates ``C = P^T P`` over window-presence matrices ``P``."""

    def __init__(self, d_sae: int, device: torch.device) -> None:
        self.d_sae = d_sae
        self.counts = torch.zeros((d_sae, d_sae), dtype=torch.int32, device=device)
        self.n_windows = 0

    def add(self, presence: torch.Tensor) -> None:
        """``presence [n_windows, d_sae]`` bool."""
        if presence.shape[0] == 0:
            return
        # float32 products are exact while a batch has < 2^24 windows; the running sum stays in int32.
        p = presence.to(torch.float32)
        self.counts += (p.T @ p).round_().to(torch.int32)
        self.n_windows += presence.shape[0]

    def marginals(self) -> torch.Tensor:
        return self.counts.diagonal().clone()

    def to_frame(self) -> pl.DataFrame:
        """Sparse upper triangle: ``feature_i <= feature_j``, ``count > 0`` (int32 columns), and ``n_windows``
        (the same on every row) so Phi can be computed from the table alone."""
        upper = torch.triu(self.counts)
        ij = upper.nonzero()
        counts = upper[ij[:, 0], ij[:, 1]]
        return pl.DataFrame({
            "feature_i": pl.Series(ij[:, 0].int().cpu().numpy(), dtype=pl.Int32),
            "feature_j": pl.Series(ij[:, 1].int().cpu().numpy(), dtype=pl.Int32),
            "count": pl.Series(counts.cpu().numpy(), dtype=pl.Int32),
        }).with_columns(pl.lit(self.n_windows, dtype=pl.Int64).alias("n_windows"))


def dense_counts(frame: pl.DataFrame, d_sae: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Inverse of :meth:`CooccurrenceCounter.to_frame`: the symmetric ``[d_sae, d_sae]`` int64 matrix."""
    c = torch.zeros((d_sae, d_sae), dtype=torch.int64, device=device)
    i = torch.from_numpy(frame["feature_i"].to_numpy().astype("int64")).to(device)
    j = torch.from_numpy(frame["feature_j"].to_numpy().astype("int64")).to(device)
    v = torch.from_numpy(frame["count"].to_numpy().astype("int64")).to(device)
    c[i, j] = v
    c[j, i] = v
    return c


def phi_from_counts(counts: torch.Tensor, n_windows: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Phi coefficients (float64) from co-occurrence counts ``[d, d]`` over ``n_windows`` windows: ``[d, d]``,
    or ``[len(rows), d]`` for the given rows only (so a large SAE can be scored block by block).

    For features i, j with the 2x2 contingency over windows (both, i only, j only, neither):
    ``phi = (N c_ij - c_i c_j) / sqrt(c_i (N - c_i) c_j (N - c_j))``, with ``c_i = C[i, i]``; 0 where a
    feature is present in no window or in every window (the coefficient is undefined there).
    """
    marg = counts.diagonal().to(torch.float64)
    n = float(n_windows)
    spread = marg * (n - marg)  # [d]; 0 where the coefficient is undefined
    inv_sd = torch.where(spread > 0, spread.clamp_min(1e-300).rsqrt(), torch.zeros((), dtype=torch.float64,
                                                                                      device=marg.device))
    if rows is None:
        rows = torch.arange(counts.shape[0], device=counts.device)
    phi = counts.index_select(0, rows).to(torch.float64).mul_(n)  # [b, d], in place from here on
    phi.sub_(marg[rows].unsqueeze(1) * marg.unsqueeze(0))
    return phi.mul_(inv_sd[rows].unsqueeze(1)).mul_(inv_sd.unsqueeze(0))
