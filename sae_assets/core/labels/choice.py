"""Which of a feature's labels is the one shown: the one rule every asset and export applies.

A feature has up to three candidates: the LLM label, the keyword label and the best of Neuronpedia's explanations
(where the partition has them), each with its held-out detection score (embedding AUROC on the same held-out
windows). The candidate with the highest score is shown. A candidate without a finite score (the feature had no
held-out windows) ranks below every scored one; ties, and features where nothing is scored, go by
:data:`PRECEDENCE`. ``feature_labels`` applies the rule (its ``label`` / ``label_source`` / ``score``);
``feature_map``, the viewer and SFAL's ``labels`` source read ``feature_labels.label``
(:func:`shown_label` for features that were never labelled).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

LabelSource = Literal["explanation", "llm", "keywords"]
PRECEDENCE: tuple[LabelSource, ...] = ("explanation", "llm", "keywords")
"""Order among candidates with equal (or no) scores: a curated explanation, then the LLM's, then keywords."""


@dataclass(frozen=True)
class Candidate:
    source: LabelSource
    text: str | None
    score: float | None = None
    """Held-out detection score (0.5 is chance); None or NaN: not scored."""


@dataclass(frozen=True)
class LabelChoice:
    label: str | None
    source: LabelSource | None
    """Which candidate won; None when the feature has no label at all."""
    score: float | None = None
    """The winner's score (None: not scored)."""


def _finite(score: float | None) -> float | None:
    return score if score is not None and math.isfinite(score) else None


def choose_label(candidates: Iterable[Candidate]) -> LabelChoice:
    """The shown label among a feature's candidates (see the module docstring); empty texts are no candidate."""
    def rank(c: Candidate) -> tuple[bool, float, int]:
        score = _finite(c.score)
        return score is not None, score if score is not None else 0.0, -PRECEDENCE.index(c.source)

    present = [c for c in candidates if c.text and c.text.strip()]
    if not present:
        return LabelChoice(None, None)
    best = max(present, key=rank)
    return LabelChoice(best.text, best.source, _finite(best.score))


def shown_label(label: str | None, explanation: str | None) -> str | None:
    """A feature's label in the map and the viewer: ``feature_labels.label`` (the chosen candidate), else, for a
    feature never labelled, the partition's explanation."""
    for text in (label, explanation):
        if text and text.strip():
            return text
    return None
