"""The shown-label rule on hand-made candidates."""

from __future__ import annotations

from sae_assets.core.labels.choice import LabelChoice, choose_label


def test_explanation_then_llm_then_keywords() -> None:
    assert choose_label("llm", "kw", "from neuronpedia") == LabelChoice("from neuronpedia", "explanation")
    assert choose_label("llm", "kw") == LabelChoice("llm", "llm")
    assert choose_label(None, "kw") == LabelChoice("kw", "keywords")
    assert choose_label("llm", "kw", explanation="") == LabelChoice("llm", "llm")


def test_empty_candidates_are_no_label() -> None:
    assert choose_label("", "") == LabelChoice(None, None)
    assert choose_label(None, None, None) == LabelChoice(None, None)
    assert choose_label("", "kw") == LabelChoice("kw", "keywords")
