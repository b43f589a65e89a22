"""Each document's peak per feature, where it is, and how many tokens each feature is active on: one pass.

The scan needs, per batch of latents ``[b, seq, d_sae]``, each document's maximum of every feature with its first
position (``torch.max(dim=1)``) and each feature's count of tokens above the activation threshold. On the CPU
``max`` with indices reduces along a strided axis one output at a time (0.19 s for 30k tokens x 2,048 latents on
2 cores, six times ``amax``), and the threshold count makes a bool copy of the batch and reduces it (0.10 s). The
compiled kernel here reads the batch once, row by row, and keeps the three running results in cache
(0.09 s); documents are split over threads, the kernel releasing the GIL. Results are exactly ``torch.max``'s
(value and first position; NaN wins as there: the first NaN) and ``(feats > threshold).sum``. Other devices and
dtypes use torch.

The kernel is compiled once per machine (1.3 s) and cached on disk, but loading it costs each process ~0.75 s, more
than it saves on a small scan: the scan asks for it only from :data:`COMPILED_FROM` token-latents on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

COMPILED_FROM = 250_000_000
"""Tokens x latents of a scan from which the kernel saves more than its load (~3.4e-9 s per token-latent on 2 AVX2
cores): ~120k tokens at 2,048 latents, ~15k at 16,384."""


def worth_compiling(n_tokens: int, d_sae: int) -> bool:
    return n_tokens * d_sae >= COMPILED_FROM


@numba.njit(cache=True, nogil=True)
def _peaks(x: np.ndarray, threshold: float, peak: np.ndarray, pos: np.ndarray, active: np.ndarray,
           first: int, last: int) -> None:
    """Documents ``first..last-1`` of ``x [b, seq, d]`` -> ``peak``, ``pos [b, d]`` and ``active [b, d]``."""
    seq, d = x.shape[1], x.shape[2]
    thr = np.float32(threshold)
    for r in range(first, last):
        pk, ps, ac = peak[r], pos[r], active[r]
        head = x[r, 0]
        for f in range(d):
            pk[f] = head[f]
            ps[f] = 0
            ac[f] = np.int32(head[f] > thr)
        for t in range(1, seq):
            row = x[r, t]
            for f in range(d):
                v = row[f]
                take = (v > pk[f]) | ((v != v) & (pk[f] == pk[f]))  # a first NaN replaces a number, as in torch
                pk[f] = v if take else pk[f]
                ps[f] = np.int32(t) if take else ps[f]
                ac[f] += np.int32(v > thr)


def document_peaks(feats: torch.Tensor, threshold: float = 0.0, compiled: bool = True,
                   threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``feats [b, seq, d_sae]`` -> ``peak [b, d_sae]`` (each document's maximum), ``pos [b, d_sae]`` int64 (its
    first position) and ``n_active [d_sae]`` int32 (tokens above ``threshold``, over the batch); with the compiled
    kernel where ``compiled`` and the batch is float32 on the CPU."""
    b, seq, d = feats.shape
    if not compiled or feats.device.type != "cpu" or feats.dtype != torch.float32 or seq == 0 or seq >= 2**31:
        peak, pos = feats.max(dim=1)
        return peak, pos, (feats > threshold).sum(dim=(0, 1), dtype=torch.int32)
    x = feats.detach().contiguous().numpy()
    top = np.empty((b, d), dtype=np.float32)
    where = np.empty((b, d), dtype=np.int32)
    active = np.empty((b, d), dtype=np.int32)
    n_threads = max(1, min(threads or torch.get_num_threads(), b))
    bounds = np.linspace(0, b, n_threads + 1).astype(int)
    if n_threads == 1:
        _peaks(x, threshold, top, where, active, 0, b)
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(lambda lo_hi: _peaks(x, threshold, top, where, active, *lo_hi),
                          zip(bounds[:-1], bounds[1:], strict=True)))
    return (torch.from_numpy(top), torch.from_numpy(where).long(),
            torch.from_numpy(active).sum(dim=0, dtype=torch.int32))
