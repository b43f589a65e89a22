"""Labelling runs over many features: LLM labels, keyword labels and detection scores.

The chat model and the embedder are passed in (any object with ``chat(conversations, max_tokens)`` /
a function ``encode(texts) -> [n, dim]`` normalized), so this module stays free of Dagster.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sae_assets.core.common.progress import Progress, Report
from sae_assets.core.labels.evidence import FeatureEvidence
from sae_assets.core.labels.labelling import (
    LabelParseError,
    Window,
    auroc,
    background_totals,
    detection_messages,
    embedding_detection_score,
    keyword_label,
    label_messages,
    parse_label,
    parse_yes_no,
)

Encode = Callable[[list[str]], np.ndarray]


def activating_tokens(ev: FeatureEvidence, fraction: float = 0.3) -> list[str]:
    """Tokens of the shown windows where the feature is above ``fraction`` of the window's peak."""
    out: list[str] = []
    for w in ev.shown:
        peak = max(w.activations, default=0.0)
        out.extend(t for t, a in zip(w.tokens, w.activations, strict=True) if peak > 0 and a > fraction * peak)
    return out


def keyword_labels(evidence: dict[int, FeatureEvidence], background: Counter[str]) -> dict[int, str]:
    totals = background_totals(background)
    return {f: keyword_label(activating_tokens(ev), background, totals=totals) for f, ev in evidence.items()}


class TextVectors:
    """``encode`` with memory: each distinct text is embedded once, in batches of ``batch`` new texts, calling
    ``poll()`` after each batch (e.g. ``progress.advance(0)``, which logs when it is due). Window texts recur:
    the same held-out windows score the LLM label and the keyword label, and random windows serve many features.
    New texts are sent longest first, so a batch holds texts of similar length (an embedder pads each of its own
    batches to its longest text): by ``encode.lengths(texts)`` where the encoder has it (the embedder's tokens),
    else by characters. Callable like an ``Encode``: ``texts -> [len(texts), dim]``."""

    def __init__(self, encode: Encode, batch: int = 512, poll: Callable[[], None] | None = None) -> None:
        self.encode, self.batch, self.poll = encode, batch, poll
        self.vectors: dict[str, np.ndarray] = {}
        self.encoded = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        new = sorted({t for t in texts if t not in self.vectors})
        measure = getattr(self.encode, "lengths", None)
        sizes = measure(new) if measure is not None and new else [len(t) for t in new]
        new = [t for _, t in sorted(zip(sizes, new, strict=True), key=lambda pair: -pair[0])]  # stable: ties sorted
        for start in range(0, len(new), self.batch):
            part = new[start : start + self.batch]
            self.vectors.update(zip(part, np.asarray(self.encode(part)), strict=True))
            self.encoded += len(part)
            if self.poll is not None:
                self.poll()
        return np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def llm_labels(chat: Any, max_tokens: int, evidence: dict[int, FeatureEvidence], chunk: int,
               report: Report | None = None) -> dict[int, tuple[str | None, str | None]]:
    """feature -> (label, error) for every feature with shown windows; errors are never turned into labels."""
    messages = {f: label_messages(ev.shown + ev.extra) for f, ev in evidence.items() if ev.shown}
    # longest prompts first, so a chunk's prompts are of similar length and a local model's batch is little padding:
    # the backend's own measure where it has one (a local model's tokens), else characters
    measure = getattr(chat, "prompt_lengths", None)
    sizes = measure(list(messages.values())) if measure is not None else \
        [sum(len(m["content"]) for m in conversation) for conversation in messages.values()]
    features = [f for _, f in sorted(zip(sizes, messages, strict=True), key=lambda pair: -pair[0])]
    progress = Progress("LLM labels", len(features), "features", report)
    out: dict[int, tuple[str | None, str | None]] = {}
    for start in range(0, len(features), chunk):
        batch = features[start : start + chunk]
        replies = chat.chat([messages[f] for f in batch], max_tokens)
        for f, reply in zip(batch, replies, strict=True):
            if reply.error is not None:
                out[f] = (None, reply.error)
                continue
            try:
                out[f] = (parse_label(reply.text or ""), None)
            except LabelParseError as err:
                out[f] = (None, f"unparseable reply: {err}")
        progress.advance(len(batch))
    progress.finish()
    return out


def llm_detection_scores(chat: Any, labels: dict[int, str | None],
                         evidence: dict[int, FeatureEvidence]) -> dict[int, float]:
    """feature -> AUROC of the judge's yes/no over held-out activating vs non-activating windows."""
    out = {}
    for f, label in labels.items():
        ev = evidence[f]
        if not (label and ev.positives and ev.negatives):
            continue
        replies = chat.chat([detection_messages(label, w) for w in ev.positives + ev.negatives], 3)
        if all(r.error is not None for r in replies):
            continue  # no judgement at all: leave the score empty rather than invent one
        votes = [1.0 if r.text is not None and parse_yes_no(r.text) else 0.0 for r in replies]
        out[f] = auroc(votes[: len(ev.positives)], votes[len(ev.positives) :])
    return out


def embedding_scores(encode: Encode, labels: Mapping[int, str | None],
                     evidence: dict[int, FeatureEvidence]) -> dict[int, float]:
    """feature -> embedding AUROC of its label: held-out activating vs non-activating windows."""
    def key(w: Window) -> str:
        return " ".join(w.text().split())

    scored = [f for f, label in labels.items() if label and evidence[f].positives and evidence[f].negatives]
    if not scored:
        return {}
    texts = sorted({key(w) for f in scored for w in evidence[f].positives + evidence[f].negatives})
    vectors = encode(texts + [label for f in scored if (label := labels[f])])  # every scored f has one
    index = {t: i for i, t in enumerate(texts)}
    label_vec = dict(zip(scored, vectors[len(texts) :], strict=True))

    def rows(windows: list[Window]) -> np.ndarray:
        return vectors[[index[key(w)] for w in windows]]

    return {f: embedding_detection_score(label_vec[f], rows(evidence[f].positives), rows(evidence[f].negatives))
            for f in scored}


def best_explanations(encode: Encode, explanations: dict[int, Sequence[str]],
                      evidence: dict[int, FeatureEvidence]) -> dict[int, tuple[str, float | None]]:
    """feature -> (its best-scoring explanation, that score) among several (Neuronpedia keeps every explainer's),
    scored like :func:`embedding_scores`; the first explanation, unscored, where none can be scored."""
    lists = {f: [t for t in texts if t and t.strip()] for f, texts in explanations.items() if f in evidence}
    best: dict[int, tuple[str, float | None]] = {f: (texts[0], None) for f, texts in lists.items() if texts}
    for slot in range(max((len(t) for t in lists.values()), default=0)):
        texts = {f: t[slot] for f, t in lists.items() if len(t) > slot}
        for f, score in embedding_scores(encode, texts, evidence).items():
            kept = best[f][1]
            if math.isfinite(score) and (kept is None or score > kept):
                best[f] = (texts[f], score)
    return best
