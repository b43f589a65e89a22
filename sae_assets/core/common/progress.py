"""Rate-limited progress reporting for long loops (tokens done, rate, ETA), and a heartbeat for calls that report
nothing themselves, so a step never goes silent for 10 s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
Report = Callable[[str], None]


class Progress:
    """Calls ``report(message)`` at most every ``every_s`` seconds, and once at the end."""

    def __init__(self, what: str, total: int, unit: str, report: Callable[[str], None] | None,
                 every_s: float = 10.0) -> None:
        self.what, self.total, self.unit, self.report, self.every_s = what, total, unit, report, every_s
        self.done = 0
        self.start = time.perf_counter()
        self._last = self.start
        self.set_aside_s = 0.0
        """Seconds of one-off work inside the loop (see :meth:`set_aside`), left out of the rate and the ETA."""

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    def set_aside(self, seconds: float) -> None:
        """Leave ``seconds`` of one-off work that the remaining items will not repeat (a model's load, the LLM
        labels of a first block) out of the rate, so the ETA is that of the items' own pace."""
        self.set_aside_s += max(seconds, 0.0)

    def message(self) -> str:
        elapsed = self.elapsed_s
        paced = elapsed - self.set_aside_s
        rate = self.done / paced if paced > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = max(eta, 0.0)
        return (f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%), "
                f"{rate:,.0f} {self.unit}/s, elapsed {elapsed:.0f}s, ETA {eta:.0f}s")

    def advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.report is not None and now - self._last >= self.every_s:
            self._last = now
            self.report(self.message())

    def finish(self) -> None:
        if self.report is not None:
            self.report(self.message())


def tracked(items: Iterable[T], progress: Progress, size: Callable[[T], int]) -> Iterator[T]:
    """``items`` unchanged, advancing ``progress`` by ``size(item)`` after each and finishing it at the end:
    progress for block-by-block reads and writes."""
    for item in items:
        yield item
        progress.advance(size(item))
    progress.finish()


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
    state: dict[str, Any] = {"last": "started", "at": start}

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
