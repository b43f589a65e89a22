"""The shown-label rule on hand-made candidates and scores."""

from __future__ import annotations

import math

from sae_assets.core.labels.choice import Candidate, LabelChoice, choose_label, shown_label


def test_the_highest_score_wins_whatever_the_source() -> None:
    candidates = [Candidate("llm", "Nazi Germany history", 0.48), Candidate("keywords", "reich, nazis, third", 0.61),
                  Candidate("explanation", "German history", 0.55)]
    assert choose_label(candidates) == LabelChoice("reich, nazis, third", "keywords", 0.61)
    candidates[2] = Candidate("explanation", "the Third Reich", 0.9)
    assert choose_label(candidates) == LabelChoice("the Third Reich", "explanation", 0.9)
    assert choose_label([Candidate("keywords", "kw", 0.2), Candidate("llm", "llm", 0.3)]) == \
        LabelChoice("llm", "llm", 0.3)


def test_unscored_candidates_rank_below_scored_ones() -> None:
    assert choose_label([Candidate("explanation", "np", None), Candidate("keywords", "kw", 0.1)]) == \
        LabelChoice("kw", "keywords", 0.1)
    assert choose_label([Candidate("llm", "llm", math.nan), Candidate("keywords", "kw", 0.3)]).source == "keywords"


def test_ties_and_no_scores_go_by_precedence() -> None:
    tied = [Candidate("keywords", "kw", 0.7), Candidate("llm", "llm", 0.7), Candidate("explanation", "np", 0.7)]
    assert choose_label(tied) == LabelChoice("np", "explanation", 0.7)
    unscored = [Candidate("keywords", "kw"), Candidate("llm", "llm", math.nan)]
    assert choose_label(unscored) == LabelChoice("llm", "llm", None)


def test_empty_candidates_are_no_label() -> None:
    assert choose_label([]) == LabelChoice(None, None)
    assert choose_label([Candidate("llm", "", 0.9), Candidate("keywords", " ", 0.8), Candidate("explanation", None)]) \
        == LabelChoice(None, None)
    assert choose_label([Candidate("llm", "", 0.9), Candidate("keywords", "kw", 0.1)]) == \
        LabelChoice("kw", "keywords", 0.1)


def test_shown_label_falls_back_to_the_explanation() -> None:
    assert shown_label("chosen", "neuronpedia's") == "chosen"
    assert shown_label(None, "neuronpedia's") == "neuronpedia's"
    assert shown_label("", None) is None
