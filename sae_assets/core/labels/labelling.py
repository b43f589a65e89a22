"""Feature labels from activating examples: prompt building, reply parsing, keyword labels, scoring.

Pure functions on token strings and activations; the LLM and the embedder are passed in.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from sae_assets.core.labels import prompts as label_prompts

MAX_LABEL_WORDS = 9
MARK_OPEN, MARK_CLOSE = "<<", ">>"


class LabelParseError(ValueError):
    """An LLM reply that holds no usable label."""


@dataclass(frozen=True)
class Window:
    """One example window: its tokens (display strings) and the feature's activation on each."""

    tokens: Sequence[str]
    activations: Sequence[float]

    def text(self) -> str:
        return "".join(self.tokens)

    def marked(self, fraction: float = 0.3) -> str:
        """The text with tokens above ``fraction`` of the window's peak wrapped in ``<<...>>``."""
        peak = max(self.activations, default=0.0)
        if peak <= 0:
            return self.text()
        out = []
        for token, act in zip(self.tokens, self.activations, strict=True):
            if act > fraction * peak and token.strip():
                lead = token[: len(token) - len(token.lstrip())]
                out.append(f"{lead}{MARK_OPEN}{token.strip()}{MARK_CLOSE}")
            else:
                out.append(token)
        return "".join(out)


def label_messages(windows: Sequence[Window]) -> list[dict[str, str]]:
    """Chat messages asking for a label of the feature active in ``windows``."""
    lines = [label_prompts.EXAMPLE_LINE.format(index=i + 1, text=" ".join(w.marked().split()))
             for i, w in enumerate(windows)]
    return [{"role": "system", "content": label_prompts.SYSTEM},
            {"role": "user", "content": label_prompts.USER.format(examples="\n".join(lines))}]


def parse_label(reply: str, max_words: int = MAX_LABEL_WORDS) -> str:
    """The label in an LLM reply: first non-empty line, without a ``Label:`` prefix, quotes or markup,
    cut to ``max_words`` words. Raises :class:`LabelParseError` when nothing is left."""
    for line in reply.splitlines():
        line = re.sub(r"^\s*(label|answer|description)\s*[:\-]\s*", "", line.strip(), flags=re.I)
        line = re.sub(r"^(\d+[.)]|[-*•])\s+", "", line)  # a list marker the model copied from the prompt
        line = line.replace(MARK_OPEN, "").replace(MARK_CLOSE, "")
        line = line.strip().strip("\"'`*#.").strip()
        if line.endswith(":") or not any(c.isalpha() for c in line):
            continue  # a header ("Excerpts:") or only numbering: no label on this line
        return " ".join(line.split()[:max_words])
    raise LabelParseError(f"no label in reply {reply[:200]!r}")


def keyword_label(activating: Sequence[str], background: Counter[str], n_keywords: int = 3,
                  prior_mass: float = 10.0, totals: tuple[int, int] | None = None) -> str:
    """Tokens over-represented at a feature's activating positions against ``background`` counts.

    Weighted log-odds with an informative Dirichlet prior (Monroe et al. 2008): the prior for token w is
    ``prior_mass`` spread in proportion to its (add-one smoothed) background frequency, and each token is
    scored by the z-score of its log-odds difference between the activating tokens and the background.
    ``totals``: ``background_totals(background)``, computed once when many features share one background.
    """
    fg = Counter(t.strip().lower() for t in activating if t.strip() and any(c.isalnum() for c in t))
    if not fg:
        return ""
    n_bg, n_vocab = totals if totals is not None else background_totals(background)
    n_fg = sum(fg.values())
    vocab = n_vocab + sum(1 for t in fg if t not in background)  # = len(set(background) | set(fg))
    scores = {}
    for token, count in fg.items():
        bg = background.get(token, 0)
        alpha = prior_mass * (bg + 1) / (n_bg + vocab)
        delta = (math.log((count + alpha) / (n_fg + prior_mass - count - alpha))
                 - math.log((bg + alpha) / (n_bg + prior_mass - bg - alpha)))
        scores[token] = delta / math.sqrt(1 / (count + alpha) + 1 / (bg + alpha))
    best = sorted(scores, key=lambda t: (-scores[t], t))[:n_keywords]
    return ", ".join(best)


def background_totals(background: Counter[str]) -> tuple[int, int]:
    """``(tokens counted, distinct tokens)`` of a background, for :func:`keyword_label`."""
    return sum(background.values()), len(background)


def background_counts(windows: Sequence[Sequence[str]]) -> Counter[str]:
    return Counter(t.strip().lower() for w in windows for t in w if t.strip() and any(c.isalnum() for c in t))


def background_counts_series(windows: pl.Series, rows_per_block: int = 65_536) -> Counter[str]:
    """:func:`background_counts` of a ``list<str>`` column, without a Python string per token: each block of
    rows is counted by distinct token in polars, then only the distinct tokens are normalized in Python."""
    out: Counter[str] = Counter()
    for start in range(0, len(windows), rows_per_block):
        counts = windows.slice(start, rows_per_block).explode().drop_nulls().value_counts()
        for token, n in counts.iter_rows():
            if token.strip() and any(c.isalnum() for c in token):
                out[token.strip().lower()] += n
    return out


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve (ties count half): P(score of a positive > score of a negative)."""
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def embedding_detection_score(label_vector: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float:
    """AUROC of cosine similarity to the label: held-out activating windows vs non-activating ones.

    Vectors are L2-normalized rows; 0.5 is chance, 1.0 a label that singles out the activating windows.
    """
    return auroc(positive @ label_vector, negative @ label_vector)


def detection_messages(label: str, window: Window) -> list[dict[str, str]]:
    text = " ".join(window.text().split())
    return [{"role": "system", "content": label_prompts.DETECTION_SYSTEM},
            {"role": "user", "content": label_prompts.DETECTION_USER.format(label=label, text=text)}]


def parse_yes_no(reply: str) -> bool | None:
    match = re.search(r"\b(yes|no)\b", reply.lower())
    return None if match is None else match.group(1) == "yes"
