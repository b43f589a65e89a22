"""Run a compiled kernel over a matrix's rows in contiguous blocks, one block per thread.

The compiled kernels (:mod:`~sae_assets.core.common.row_selection`, :mod:`~sae_assets.core.scan.document_peaks`)
release the GIL and take a row range ``first..last-1``; here the rows are cut into ``threads`` near-equal blocks
and each goes to a thread of a pool kept for the process (starting a pool per call costs a few ms, on paths that
call once per batch). One block runs on the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="row-split")


def row_blocks(n_rows: int, threads: int) -> list[tuple[int, int]]:
    """``(first, last)`` of ``min(threads, n_rows)`` (at least 1) contiguous blocks covering ``0..n_rows-1``."""
    bounds = np.linspace(0, n_rows, max(1, min(threads, n_rows)) + 1).astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def over_row_blocks(kernel: Callable[[int, int], object], n_rows: int, threads: int) -> None:
    """``kernel(first, last)`` for each of :func:`row_blocks`, the blocks on threads at once; returns when every
    block is done, raising where any failed."""
    blocks = row_blocks(n_rows, threads)
    if len(blocks) == 1:
        kernel(*blocks[0])
        return
    futures = [_pool(len(blocks) - 1).submit(kernel, lo, hi) for lo, hi in blocks[1:]]
    try:
        kernel(*blocks[0])
    finally:
        for future in futures:
            future.result()
