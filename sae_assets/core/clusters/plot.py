"""Scatter plot of clustered features rendered to PNG bytes (shown in the Dagster UI as a Markdown image)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from sae_assets.core.common.plots import figure_png

NOISE_COLOR = "#BBBBBB"


def cluster_scatter_png(x: np.ndarray, y: np.ndarray, labels: np.ndarray, selected: np.ndarray | None = None,
                        features: np.ndarray | None = None, title: str = "feature clusters",
                        annotate_max: int = 40) -> bytes:
    """PNG of points ``x [n]``, ``y [n]`` colored by cluster ``labels [n]`` (-1 = noise, grey); ``selected [n]``
    (bool) targets are ringed, and labelled with their ``features [n]`` ids when there are at most
    ``annotate_max`` of them."""
    x, y, labels = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), np.asarray(labels)
    selected = np.zeros(len(x), dtype=bool) if selected is None else np.asarray(selected, dtype=bool)
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=90)
    noise = labels < 0
    size = 6 if len(x) > 2000 else 14
    ax.scatter(x[noise], y[noise], s=size, c=NOISE_COLOR, linewidths=0, label=f"noise ({int(noise.sum())})")
    clusters = np.unique(labels[~noise])
    palette = _palette(len(clusters))
    for i, c in enumerate(clusters):
        member = labels == c
        ax.scatter(x[member], y[member], s=size, color=palette[i % len(palette)], linewidths=0,
                   label=f"{c} ({int(member.sum())})" if len(clusters) <= 12 else None)
    if selected.any():
        ax.scatter(x[selected], y[selected], s=60, facecolors="none", edgecolors="black", linewidths=1.0,
                   label=f"targets ({int(selected.sum())})")
        if features is not None and selected.sum() <= annotate_max:
            for fx, fy, f in zip(x[selected], y[selected], np.asarray(features)[selected], strict=True):
                ax.annotate(str(f), (fx, fy), xytext=(3, 3), textcoords="offset points", fontsize=7)
    ax.set_title(f"{title}: {len(clusters)} clusters, {len(x)} features")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=7, markerscale=1.2, loc="best", frameon=False)
    return figure_png(fig)


def _palette(n: int) -> list:
    """Distinct colours without the greys (grey is noise): tab10 (9 colours) for few clusters, else tab20 (18)."""
    if n <= 9:
        return [plt.get_cmap("tab10")(i) for i in range(10) if i != 7]
    return [plt.get_cmap("tab20")(i) for i in range(20) if i not in (14, 15)]
