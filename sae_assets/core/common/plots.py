"""Small matplotlib figures rendered to PNG bytes (shown in the Dagster UI as Markdown images)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def figure_png(fig: Any) -> bytes:
    """Render and close a matplotlib figure."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def histogram_png(values: np.ndarray, title: str, xlabel: str, bins: int = 50, log_y: bool = False) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-6 * max(1.0, abs(hi)):  # constant values (e.g. unit-norm decoders)
        lo, hi = lo - 0.5e-3 * max(1.0, abs(lo)), hi + 0.5e-3 * max(1.0, abs(hi))
    ax.hist(finite, bins=bins, range=(lo, hi), color="#4C72B0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("features")
    if log_y:
        ax.set_yscale("log")
    return figure_png(fig)


def lines_png(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, xlabel: str, ylabel: str) -> bytes:
    """One marked line per name: ``{name: (x [n], y [n])}``."""
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return figure_png(fig)


def labelled_points_png(series: dict[str, tuple[np.ndarray, np.ndarray, list[str]]], title: str, xlabel: str,
                        ylabel: str, log_x: bool = False) -> bytes:
    """One marked line per name, each point annotated: ``{name: (x [n], y [n], labels [n])}`` (Gemma Scope's
    loss-against-L0 plots, a point per layer)."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    for name, (x, y, labels) in series.items():
        ax.plot(x, y, marker="o", label=name)
        for xi, yi, label in zip(x, y, labels, strict=True):
            ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_x:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return figure_png(fig)


def binned_histograms_png(edges: np.ndarray, counts: dict[str, np.ndarray], title: str, xlabel: str) -> bytes:
    """Histograms already binned (``counts[name] [len(edges) - 1]``), drawn as outlines on one set of axes."""
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    for name, values in counts.items():
        ax.stairs(values, edges, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("features")
    if counts:
        ax.legend(fontsize=7, ncol=2)
    return figure_png(fig)
