"""Progress of the long library calls behind feature clusters and maps (UMAP, HDBSCAN), which report nothing
themselves: UMAP's epochs as done / rate / ETA through its tqdm bar, and a heartbeat for the phases before them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Report = Callable[[str], None]

EPOCHS_FORMAT = "{n_fmt}/{total_fmt} epochs ({percentage:.0f}%), {rate_fmt}, elapsed {elapsed}, ETA {remaining}"


class _ReportFile:
    """A file for tqdm: each line it writes goes to ``report``, prefixed with ``what``."""

    def __init__(self, report: Report, what: str) -> None:
        self.report, self.what = report, what

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            self.report(f"{self.what}: {text}")

    def flush(self) -> None:
        pass


def umap_tqdm_kwds(report: Report | None, what: str, every_s: float = 10.0) -> dict:
    """``tqdm_kwds`` for ``umap.UMAP``: its optimization epochs reported (done, rate, ETA) at most every
    ``every_s`` seconds, from the calling thread; nothing when ``report`` is None."""
    if report is None:
        return {"disable": True}
    return {"disable": False, "file": _ReportFile(report, what), "mininterval": every_s, "miniters": 1,
            "bar_format": EPOCHS_FORMAT, "ascii": True}


@contextmanager
def heartbeat(report: Report | None, what: str, every_s: float = 10.0) -> Iterator[None]:
    """While the block runs, ``report`` "<what>: running, elapsed N s" every ``every_s`` seconds (from a
    background thread), for calls that expose no progress of their own."""
    if report is None:
        yield
        return
    done, start = threading.Event(), time.perf_counter()

    def beat() -> None:
        while not done.wait(every_s):
            report(f"{what}: running, elapsed {time.perf_counter() - start:.0f}s")

    thread = threading.Thread(target=beat, name=f"heartbeat {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
