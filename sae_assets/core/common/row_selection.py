"""The first k of each row's stable descending order, as a compiled per-row selection (CPU, large rows).

:func:`~sae_assets.core.common.ranking.top_order`'s torch path spends most of its time in ``topk``, which copies
every row into (value, index) pairs and partitions them. Here each row takes three steps that stay in cache:

1. a threshold ``t`` read off a strided sample of the row (about 1,024 entries), meant to leave a little more
   than k entries at or above it;
2. the candidates: the columns whose entry is ``>= t``, in column order (every column when fewer than k are);
3. the candidates stably sorted by value descending (a radix sort of order-preserving integer keys; ties keep
   column order), of which the first k are the answer; where more than 2k are candidates (many entries tie at
   the k-th value ``v_k``, e.g. a row of zeros), only those above ``v_k`` are sorted, followed by the lowest
   columns equal to ``v_k``.

At least k entries are ``>= t``, so ``v_k`` is too, and every entry that can be in the first k is a candidate:
this is exactly the first k of a stable descending sort (ties broken by column ascending), whatever the ties.
Rows holding NaN are not ordered here: they come back as -1 for the caller to sort. Rows are split over threads
(the kernel releases the GIL). Compiled with numba on first use and cached on disk (numba's cache), so it serves
only where rows are long enough to repay that once per machine: SFAL's blocks of 512 x 16,384 in 30-40 ms each
on 2 cores, against 60-90 ms for torch's sorted ``topk`` with the tie handling around it.
"""

from __future__ import annotations

import numba
import numpy as np

from sae_assets.core.common.row_split import over_row_blocks

SAMPLE = 1024
"""Entries of each row the threshold is read from."""
_MSB = np.uint64(1 << 63)
_BYTE = np.uint64(255)


@numba.njit(cache=True, nogil=True)
def _descending_keys(values: np.ndarray) -> np.ndarray:
    """float64 ``[c]`` (no NaN) -> uint64 keys whose ascending order is the values' descending order; -0.0 and 0.0
    get the same key, as they compare equal."""
    bits = (values + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
    return np.where(bits & _MSB, bits, ~(bits | _MSB))


@numba.njit(cache=True, nogil=True)
def _stable_sort(keys: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``cols`` reordered by ascending ``keys``, equal keys keeping their order: least-significant-byte radix
    sort, skipping the bytes every key shares."""
    c = keys.shape[0]
    src_k, src_c = keys, cols
    dst_k, dst_c = np.empty_like(keys), np.empty_like(cols)
    for byte in range(8):
        shift = np.uint64(8 * byte)
        starts = np.zeros(257, dtype=np.int64)
        for i in range(c):
            starts[np.int64((src_k[i] >> shift) & _BYTE) + 1] += 1
        if starts.max() == c:
            continue  # one bucket holds every key: this byte does not reorder
        for bucket in range(256):
            starts[bucket + 1] += starts[bucket]
        for i in range(c):
            d = np.int64((src_k[i] >> shift) & _BYTE)
            at = starts[d]
            dst_k[at], dst_c[at] = src_k[i], src_c[i]
            starts[d] = at + 1
        src_k, dst_k, src_c, dst_c = dst_k, src_k, dst_c, src_c
    return src_c


@numba.njit(cache=True, nogil=True)
def _top_rows(scores: np.ndarray, k: int, out: np.ndarray, first: int, last: int) -> None:
    """Rows ``first..last-1`` of ``scores [b, n]`` -> ``out [b, k]`` (the module's steps 1-3)."""
    n = scores.shape[1]
    step = max(1, n // SAMPLE)
    cand, ties = np.empty(n, dtype=np.int64), np.empty(k, dtype=np.int64)
    for r in range(first, last):
        row = scores[r]
        if np.isnan(row).any():
            out[r, :] = -1  # not ordered here: the caller sorts these rows
            continue
        sample = row[::step].copy()
        m = sample.shape[0]
        q = min(m, (k * m) // n + (k * m) // (4 * n) + 8)  # a quarter more than k's share of the sample
        t = np.partition(sample, m - q)[m - q]
        c = 0
        for j in range(n):
            if row[j] >= t:
                cand[c] = j
                c += 1
        if c < k:  # the sample overestimated the k-th value: every column is a candidate
            c = n
            cand[:] = np.arange(n)
        if c > 2 * k:  # many ties at the k-th value (e.g. an all-zero row): sort only what is above it
            kth = np.partition(row[cand[:c]], c - k)[c - k]
            above = tied = 0
            for i in range(c):
                col = cand[i]
                if row[col] > kth:
                    cand[above] = col  # above <= i: compacts in place, column order kept
                    above += 1
                elif row[col] == kth and tied < k:
                    ties[tied] = col
                    tied += 1
            out[r, :above] = _stable_sort(_descending_keys(row[cand[:above]]), cand[:above])
            out[r, above:] = ties[: k - above]
        else:
            out[r, :] = _stable_sort(_descending_keys(row[cand[:c]]), cand[:c])[:k]


def top_rows(scores: np.ndarray, k: int, threads: int = 1) -> np.ndarray:
    """``scores [b, n]`` (float64, ``1 <= k <= n``) -> ``[b, k]`` int64 columns: per row the k highest by
    descending value, ties broken by column ascending; all -1 for a row holding NaN. Rows are split over
    ``threads`` threads."""
    b, n = scores.shape
    if scores.dtype != np.float64:
        raise ValueError(f"scores must be float64, not {scores.dtype}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, not {k}")
    out = np.empty((b, k), dtype=np.int64)
    over_row_blocks(lambda first, last: _top_rows(scores, k, out, first, last), b, threads)
    return out
