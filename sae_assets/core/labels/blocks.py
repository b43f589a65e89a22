"""Labelling every feature of an SAE in blocks: evidence, keyword and LLM labels, their scores, the chosen label.

The windows of a block of features are the only ones held as Python objects (at 32k latents all of them would
take several GB), each distinct window text is embedded once (:class:`~sae_assets.core.labels.runs.TextVectors`),
and progress (features done, rate, ETA) is reported as blocks finish. Results are the same as labelling all
features at once: blocks only bound what is in memory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from sae_assets.core.common.progress import Progress
from sae_assets.core.labels.choice import Candidate, LabelChoice, choose_label
from sae_assets.core.labels.evidence import FeatureEvidence, add_prompt_evidence, gather_evidence
from sae_assets.core.labels.runs import (
    Encode,
    Report,
    TextVectors,
    best_explanations,
    embedding_scores,
    keyword_labels,
    llm_detection_scores,
    llm_labels,
)

BLOCK = 256
"""Features per block: a few seconds of work each on 2 cores, so progress moves between reports."""


class AllLabelCallsFailed(RuntimeError):
    """Every LLM label call failed: nothing should be written."""


@dataclass(frozen=True)
class LabelSettings:
    n_shown: int = 8
    """Top-activating windows shown to the labeller."""
    n_holdout: int = 6
    """Held-out activating windows the label is scored on."""
    use_llm: bool = True
    """False: keyword labels only."""
    llm_max_features: int | None = None
    """LLM labels for the first this many features of the selection (None: all)."""
    chunk: int = 16
    """Features per labeller call."""
    max_new_tokens: int = 24
    """Token budget of one LLM label."""
    llm_detection: bool = False
    """Also score labels with the labeller as a detection judge (one call per held-out window)."""


@dataclass
class BlockedLabels:
    """Per feature (each once, whatever the selection repeats)."""

    llm: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)
    """(label, error) for the features sent to the LLM that had windows to show."""
    keywords: dict[int, str] = field(default_factory=dict)
    explanations: dict[int, tuple[str, float | None]] = field(default_factory=dict)
    """The best-scoring of the feature's given explanations, and its score."""
    choices: dict[int, LabelChoice] = field(default_factory=dict)
    """The shown label, its source and score (:func:`~sae_assets.core.labels.choice.choose_label`)."""
    llm_scores: dict[int, float] = field(default_factory=dict)
    keyword_scores: dict[int, float] = field(default_factory=dict)
    detection: dict[int, float] = field(default_factory=dict)
    n_shown: dict[int, int] = field(default_factory=dict)
    llm_seconds: float = 0.0
    prompts_added: int = 0
    texts_embedded: int = 0

    @property
    def labels(self) -> dict[int, str | None]:
        """The shown label of each feature (None: no label)."""
        return {f: choice.label for f, choice in self.choices.items()}

    @property
    def scores(self) -> dict[int, float]:
        """The shown label's score, for the features where it has one."""
        return {f: c.score for f, c in self.choices.items() if c.score is not None}


def label_in_blocks(examples: pl.DataFrame, indices: list[int], background: Counter[str], chat: Any,
                    encode: Encode, settings: LabelSettings, prompts: pl.DataFrame | None = None,
                    report: Report | None = None, on_block: Callable[[list[int], dict[int, FeatureEvidence]], None]
                    | None = None, block: int = BLOCK,
                    explanations: dict[int, list[str]] | None = None) -> BlockedLabels:
    """Label the features ``indices`` from ``examples`` (``activation_examples`` rows, at least
    :data:`~sae_assets.core.labels.evidence.EVIDENCE_COLUMNS`), ``block`` features at a time.

    ``chat``: the labeller (needed when ``use_llm`` or ``llm_detection``); ``encode``: the embedder; ``prompts``:
    optimized prompts added to the labeller's evidence; ``on_block(features, evidence)`` is called once per block
    (e.g. to export the shown windows); ``explanations``: feature -> explanations from elsewhere (Neuronpedia's),
    scored on the same held-out windows as the LLM and keyword labels, the best of them a third candidate.
    Raises :class:`AllLabelCallsFailed` as soon as every LLM call made has failed
    and no feature is left to send (the LLM features are the first of ``indices``, so the first blocks)."""
    features = list(dict.fromkeys(indices))
    llm_features = set(indices[: settings.llm_max_features]) if settings.use_llm else set()
    pending = set(llm_features)
    progress = Progress("feature labels", len(features), "features", report)
    vectors = TextVectors(encode, poll=lambda: progress.advance(0) if progress.done else None)
    out = BlockedLabels()
    for start in range(0, len(features), block):
        part = features[start : start + block]
        evidence = gather_evidence(examples, part, settings.n_shown, settings.n_holdout)
        if prompts is not None:
            out.prompts_added += add_prompt_evidence(evidence, prompts)
        keywords = keyword_labels(evidence, background)
        for_llm = {f: evidence[f] for f in part if f in llm_features}
        if for_llm:
            t0 = time.perf_counter()
            out.llm |= llm_labels(chat, settings.max_new_tokens, for_llm, settings.chunk, report)
            out.llm_seconds += time.perf_counter() - t0
        pending -= set(part)
        if for_llm and not pending:  # the blocks left have no LLM labels: their ETA at the pace without them
            progress.set_aside(out.llm_seconds)
        if not pending and out.llm and all(err is not None for _, err in out.llm.values()):
            first = next(iter(out.llm.values()))[1]
            raise AllLabelCallsFailed(f"Every LLM label call failed; nothing written. First error: {first}")
        llm = {f: out.llm.get(f, (None, None))[0] for f in part}
        llm_scores = embedding_scores(vectors, llm, evidence)
        keyword_scores = embedding_scores(vectors, {f: k or None for f, k in keywords.items()}, evidence)
        explained = best_explanations(vectors, {f: explanations[f] for f in part if f in explanations}, evidence) \
            if explanations else {}
        choices = {f: choose_label([
            Candidate("llm", llm[f], llm_scores.get(f)), Candidate("keywords", keywords[f], keyword_scores.get(f)),
            Candidate("explanation", *explained.get(f, (None, None)))]) for f in part}
        labels = {f: choice.label for f, choice in choices.items()}
        out.llm_scores |= llm_scores
        out.keyword_scores |= keyword_scores
        out.explanations |= explained
        if settings.llm_detection:
            out.detection |= llm_detection_scores(chat, labels, evidence)
        out.keywords |= keywords
        out.choices |= choices
        out.n_shown |= {f: len(evidence[f].shown) for f in part}
        if on_block is not None:
            on_block(part, evidence)
        progress.advance(len(part))
    progress.finish()
    out.texts_embedded = vectors.encoded
    return out
