"""Which of a feature's labels is the one shown: the one rule every asset and export applies.

Candidates, in order of precedence: the partition's explanation (Neuronpedia's, or the platform's own labels
republished by ``explanations``), the LLM label, the keyword label; the first that is not empty wins.
``feature_labels`` applies it without explanations (its ``label`` and ``label_source`` columns), ``feature_map``
with them (the viewer's label); SFAL's ``labels`` source reads ``feature_labels.label``, so it follows too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LabelSource = Literal["explanation", "llm", "keywords"]


@dataclass(frozen=True)
class LabelChoice:
    label: str | None
    source: LabelSource | None
    """Which candidate won; None when the feature has no label at all."""


def choose_label(llm: str | None = None, keywords: str | None = None,
                 explanation: str | None = None) -> LabelChoice:
    """The shown label among a feature's candidates (see the module docstring for the order)."""
    candidates: tuple[tuple[LabelSource, str | None], ...] = (
        ("explanation", explanation), ("llm", llm), ("keywords", keywords))
    for source, value in candidates:
        if value:
            return LabelChoice(value, source)
    return LabelChoice(None, None)
