"""Keep freed memory in the process for the length of a hot loop, instead of handing it back to the OS.

glibc's malloc serves a block above a threshold (which grows to at most 32 MiB) with its own ``mmap`` and unmaps it
when freed, and trims the heap's free top back to the OS. A loop that makes and frees the same tens of MB every
iteration (a forward pass's ``[b, heads, seq, seq]`` attention scores, a batch's latents) therefore faults and
zeroes those pages again each time. Inside :func:`retained_heap` blocks up to 128 MiB come from the heap and up to
256 MiB of its free top is kept, so a loop's blocks are reused: the scan's page faults drop to about a quarter, its
bare forward's to a tenth or less. Larger blocks (a 16k-latent batch's 268 MB of latents) are mapped as before,
which bounds what the setting adds to a run's peak memory. On leaving, the thresholds go back to where glibc's own
dynamic scheme ends up and the freed memory is returned (``malloc_trim``). SAE training (steps, and the collection of
activations in 16 x 128-token batches, whose blocks stay under glibc's own thresholds) gained nothing and is left
out. Measured: ``benchmarks/results/2026-12-02-retained-heap.md``.

Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h>
RETAIN = {M_MMAP_THRESHOLD: 128 << 20, M_TRIM_THRESHOLD: 256 << 20, M_TOP_PAD: 0}
"""Inside: blocks up to 128 MiB from the heap; up to 256 MiB of the heap's free top kept."""
RESTORE = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20, M_TOP_PAD: 128 << 10}
"""After: where glibc's dynamic thresholds settle once a 32 MiB block has been freed, and its default top pad."""

_lock = threading.Lock()
_depth = 0


def _load_libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


def _mallopt(libc: ctypes.CDLL, values: dict[int, int]) -> None:
    for param, value in values.items():
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
            log.debug("mallopt(%d, %d) was refused", param, value)


@contextmanager
def retained_heap() -> Iterator[None]:
    """Inside, freed blocks up to 128 MiB stay in the process for reuse. Nested or concurrent uses share the
    setting; the last to leave restores glibc's thresholds and returns the freed memory."""
    global _depth
    libc = _LIBC
    with _lock:
        if _depth == 0 and libc is not None:
            _mallopt(libc, RETAIN)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and libc is not None:
                _mallopt(libc, RESTORE)
                libc.malloc_trim(ctypes.c_size_t(0))


def active() -> bool:
    """Whether some :func:`retained_heap` is open (on glibc: whether its setting is in force)."""
    return _depth > 0
