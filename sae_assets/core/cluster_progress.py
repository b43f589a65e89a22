"""Progress of steps whose long parts are library calls that report nothing (UMAP, HDBSCAN, a batch of LLM
generations): UMAP's epochs as done / rate / ETA through its tqdm bar, and a heartbeat that repeats the latest
progress line while a call runs, so a step never goes silent for 10 s.
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
def heartbeat(report: Report | None, what: str, every_s: float = 9.0) -> Iterator[Report]:
    """Yields the ``report`` to use inside the block: it forwards each message and remembers it. Whenever nothing
    was reported for ``every_s`` seconds, a background thread reports "<what>: running for N s; last: <message>".
    Messages from both threads are serialized. With ``report`` None: yields a no-op and starts nothing."""
    if report is None:
        yield lambda message: None
        return
    lock, done = threading.Lock(), threading.Event()
    start = time.perf_counter()
    state = {"last": "started", "at": start}

    def forward(message: str) -> None:
        with lock:
            report(message)
            state["last"], state["at"] = message, time.perf_counter()

    def beat() -> None:
        while not done.wait(min(0.5, every_s)):
            with lock:
                now = time.perf_counter()
                if now - state["at"] >= every_s:
                    report(f"{what}: running for {now - start:.0f}s; last: {state['last']}")
                    state["at"] = now

    thread = threading.Thread(target=beat, name=f"heartbeat {what}", daemon=True)
    thread.start()
    try:
        yield forward
    finally:
        done.set()
        thread.join()
