"""Rate-limited progress reporting for long loops (tokens done, rate, ETA)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Progress:
    """Calls ``report(message)`` at most every ``every_s`` seconds, and once at the end."""

    def __init__(self, what: str, total: int, unit: str, report: Callable[[str], None] | None,
                 every_s: float = 10.0) -> None:
        self.what, self.total, self.unit, self.report, self.every_s = what, total, unit, report, every_s
        self.done = 0
        self.start = time.perf_counter()
        self._last = self.start

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    def message(self) -> str:
        elapsed = self.elapsed_s
        rate = self.done / elapsed if elapsed > 0 else 0.0
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
