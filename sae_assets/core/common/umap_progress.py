"""UMAP's optimization epochs as progress lines (done / rate / ETA) through its tqdm bar (the clusters and the
feature map). For library calls that report nothing at all (HDBSCAN, a batch of LLM generations), wrap them in
:func:`sae_assets.core.common.progress.heartbeat`.
"""

from __future__ import annotations

from sae_assets.core.common.progress import Report

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
