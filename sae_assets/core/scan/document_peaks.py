"""Each document's peak per feature, where it is, and how many tokens each feature is active on: one pass.

The scan needs, per batch of latents ``[b, seq, d_sae]``, each document's maximum of every feature with its first
position (``torch.max(dim=1)``) and each feature's count of tokens above the activation threshold. On the CPU
``max`` with indices reduces along a strided axis one output at a time (0.19 s for 30k tokens x 2,048 latents on
2 cores, six times ``amax``), and the threshold count makes a bool copy of the batch and reduces it (0.10 s). The
compiled kernel here reads the batch once, row by row, and keeps the three running results in cache
(0.09 s); documents are split over threads, the kernel releasing the GIL. Without it, torch's path takes ``amax``
and finds the first position equal to it (0.15 s). Results are exactly ``torch.max``'s (value and first position;
NaN wins as there: the first NaN; torch's path may give a zero peak the other sign) and ``(feats > threshold).sum``.
Other devices and dtypes use torch.

The kernel is compiled once per machine (1.3 s) and cached on disk, but its first call costs each process ~0.6 s
(numba loading its typing and lowering registries), more than it saves on a small scan: the scan asks for it only
from :data:`COMPILED_FROM` token-latents on.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from sae_assets.core.common.row_split import over_row_blocks

COMPILED_FROM = 250_000_000
"""Tokens x latents of a scan from which the kernel saves more than its first call costs (against torch's path, 2.4e-9
s per token-latent at 2,048 latents and 3.7e-9 at 16,384 on 2 AVX2 cores): ~120k tokens at 2,048 latents, ~15k at
16,384."""
COUNT_ROWS = 128
"""Token rows per block of the torch path's threshold count."""


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


def _torch_peaks(feats: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`document_peaks` in torch. On the CPU ``max`` with indices is slow (above), so the peak is ``amax``
    and its first position the least index where the batch equals it (int16 / int32 indices, a vectorized
    ``amin``), unless a peak is NaN (``max``'s own rule then); the threshold count is summed over row blocks of
    ``COUNT_ROWS`` (a reduction over all rows at once runs at half the speed). 30k tokens x 2,048 latents:
    ~0.15 s against ~0.29 s."""
    b, seq, d = feats.shape
    if feats.device.type != "cpu" or seq == 0:
        peak, pos = feats.max(dim=1)
        return peak, pos, (feats > threshold).sum(dim=(0, 1), dtype=torch.int32)
    peak = feats.amax(dim=1)  # [b, d]
    if peak.isnan().any():
        peak, pos = feats.max(dim=1)
    else:
        index = torch.arange(seq, dtype=torch.int16 if seq < 2**15 else torch.int32).view(1, seq, 1)
        pos = torch.where(feats == peak.unsqueeze(1), index, seq).amin(dim=1).long()
    rows = feats.reshape(b * seq, d)
    n_active = torch.zeros(d, dtype=torch.int32)
    for start in range(0, b * seq, COUNT_ROWS):
        n_active += (rows[start:start + COUNT_ROWS] > threshold).sum(dim=0, dtype=torch.int32)
    return peak, pos, n_active


def document_peaks(feats: torch.Tensor, threshold: float = 0.0, compiled: bool = True,
                   threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``feats [b, seq, d_sae]`` -> ``peak [b, d_sae]`` (each document's maximum), ``pos [b, d_sae]`` int64 (its
    first position) and ``n_active [d_sae]`` int32 (tokens above ``threshold``, over the batch); with the compiled
    kernel where ``compiled`` and the batch is float32 on the CPU."""
    b, seq, d = feats.shape
    if not compiled or feats.device.type != "cpu" or feats.dtype != torch.float32 or seq == 0 or seq >= 2**31:
        return _torch_peaks(feats, threshold)
    x = feats.detach().contiguous().numpy()
    top = np.empty((b, d), dtype=np.float32)
    where = np.empty((b, d), dtype=np.int32)
    active = np.empty((b, d), dtype=np.int32)
    over_row_blocks(lambda first, last: _peaks(x, threshold, top, where, active, first, last), b,
                    threads or torch.get_num_threads())
    return (torch.from_numpy(top), torch.from_numpy(where).long(),
            torch.from_numpy(active).sum(dim=0, dtype=torch.int32))
