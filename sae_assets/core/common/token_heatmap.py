"""Token heatmaps: rows of tokens, each shaded by a feature's activation on it (PNG bytes for the UI)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps

from sae_assets.core.common.plots import figure_png

MAX_TOKEN_CHARS = 14


def _shown(token: str) -> str:
    text = token.replace("\n", "⏎").replace("\t", "⇥").replace("$", r"\$")
    return text if len(text) <= MAX_TOKEN_CHARS else text[: MAX_TOKEN_CHARS - 1] + "…"


def token_heatmap_png(rows: list[tuple[str, list[str], list[float]]], title: str) -> bytes:
    """``rows``: (caption, tokens [n], activations [n]) each; every row is shaded on the scale of its own
    caption group's maximum (the largest activation over all rows), so rows compare directly."""
    peak = max((max(a, default=0.0) for _, _, a in rows), default=0.0) or 1.0
    cmap = colormaps["Reds"]
    width = max((sum(len(_shown(t)) + 1 for t in tokens) for _, tokens, _ in rows), default=10)
    fig, ax = plt.subplots(figsize=(min(14.0, 1.5 + 0.09 * width), 0.3 + 0.55 * max(len(rows), 1)), dpi=90)
    ax.set_xlim(0, width + 1)
    ax.set_ylim(len(rows), 0)
    ax.axis("off")
    for r, (caption, tokens, acts) in enumerate(rows):
        ax.text(0, r + 0.18, caption, fontsize=7, color="#444444", va="top")
        x = 0.0
        for token, act in zip(tokens, acts, strict=True):
            shown = _shown(token)
            ax.text(x, r + 0.62, shown, fontsize=8, family="monospace", va="center",
                    bbox={"boxstyle": "square,pad=0.15", "linewidth": 0,
                          "facecolor": cmap(float(np.clip(act / peak, 0, 1)) * 0.85)})
            x += len(shown) + 1
    ax.set_title(f"{title} (max {peak:.2f})", fontsize=9)
    return figure_png(fig)
