from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import polars as pl
import pytest

from sae_assets.core.common.progress import Progress
from sae_assets.core.labels import blocks
from sae_assets.core.labels.blocks import AllLabelCallsFailed, LabelSettings, label_in_blocks
from sae_assets.core.labels.choice import Candidate, LabelChoice, choose_label
from sae_assets.core.labels.labelling import background_counts_series
from sae_assets.resources.labeller import Reply

WORDS = [" cat", " dog", " car", " red", " blue", " sun", " rain", " tree", " bird", " fish", ",", " "]


def _examples(n_features: int = 7, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_features):
        for kind, n in (("top", 6), ("quantile", 4), ("random", 4)):
            for rank in range(n):
                tokens = [WORDS[i] for i in rng.integers(0, len(WORDS), 5)]
                acts = (rng.random(5) * (kind != "random" or rank == 0)).tolist()
                rows.append({"feature": f, "kind": kind, "rank": rank, "quantile": rank % 2 if kind == "quantile"
                             else None, "activation": max(acts), "tokens": tokens, "token_activations": acts})
    return pl.DataFrame(rows)


class Chat:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.calls = fail, 0

    def chat(self, conversations, max_tokens):
        self.calls += 1
        if self.fail:
            return [Reply(None, "HTTP 500") for _ in conversations]
        return [Reply("Label: " + ("animals" if "cat" in c[-1]["content"] else "things")) for c in conversations]


def _encode(texts: list[str]) -> np.ndarray:
    v = np.array([[t.count("cat") + t.count("animals"), t.count("car") + t.count("things"), 1.0] for t in texts])
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_blocks_change_nothing_but_memory() -> None:
    examples = _examples()
    background = background_counts_series(examples["tokens"])
    settings = LabelSettings(n_shown=3, n_holdout=2, llm_max_features=4, chunk=2)
    indices = [5, 0, 3, 3, 1, 6, 2, 4]  # a repeated feature is labelled once
    runs = [label_in_blocks(examples, indices, background, Chat(), _encode, settings, block=b) for b in (1, 3, 100)]
    for run in runs[1:]:
        for name in ("llm", "keywords", "labels", "scores", "keyword_scores", "n_shown"):
            assert getattr(run, name) == getattr(runs[0], name), name
    assert sorted(runs[0].llm) == [0, 3, 5] and set(runs[0].labels) == set(range(7))  # the first 4 of the selection
    assert runs[0].texts_embedded == runs[2].texts_embedded  # each distinct text once, whatever the blocks
    seen: list[int] = []
    label_in_blocks(examples, indices, background, Chat(), _encode, settings, block=3,
                    on_block=lambda block, evidence: seen.extend(f for f in block if evidence[f].shown))
    assert seen == [5, 0, 3, 1, 6, 2, 4]


def test_all_llm_calls_failing_stops_after_the_llm_features() -> None:
    examples = _examples()
    chat = Chat(fail=True)
    messages: list[str] = []
    with pytest.raises(AllLabelCallsFailed, match="Every LLM label call failed; nothing written. First error: HTTP"):
        label_in_blocks(examples, list(range(7)), Counter(), chat, _encode, LabelSettings(llm_max_features=2),
                        report=messages.append, block=2)
    assert chat.calls == 1  # the first block held both LLM features: no other block was labelled
    keywords_only = label_in_blocks(examples, list(range(7)), Counter(), chat, _encode,
                                    LabelSettings(use_llm=False), block=2)
    assert keywords_only.llm == {} and chat.calls == 1 and len(keywords_only.scores) > 0


class ThingsChat:
    """Labels every feature "things" (a bad label for cat windows)."""

    def chat(self, conversations, max_tokens):
        return [Reply("things") for _ in conversations]


def _cat_feature() -> pl.DataFrame:
    """Feature 0 fires on " sun" in windows about cats; its silent random windows are about cars."""
    rows = []
    for kind, n in (("top", 6), ("quantile", 4), ("random", 4)):
        for rank in range(n):
            silent = kind == "random"
            rows.append({"feature": 0, "kind": kind, "rank": rank, "quantile": 0 if kind == "quantile" else None,
                         "activation": 0.0 if silent else 1.0,
                         "tokens": [" sun", " car" if silent else " cat", " car" if silent else " cat"],
                         "token_activations": [0.0 if silent else 1.0, 0.0, 0.0]})
    return pl.DataFrame(rows)


def test_the_best_scoring_candidate_is_the_label() -> None:
    examples = _cat_feature()
    settings = LabelSettings(n_shown=3, n_holdout=4)
    run = label_in_blocks(examples, [0], background_counts_series(examples["tokens"]), ThingsChat(), _encode,
                          settings, explanations={0: ["cars", "animals"], 7: ["not a labelled feature"]})
    assert run.keywords[0] == "sun" and run.keyword_scores[0] == 0.5  # the encoder cannot tell sun windows apart
    assert run.llm[0] == ("things", None) and run.llm_scores[0] == 0.0  # "things" is nearer the car windows
    assert run.explanations == {0: ("animals", 1.0)}  # the better of Neuronpedia's two
    assert run.choices[0] == LabelChoice("animals", "explanation", 1.0) and run.scores == {0: 1.0}
    without = label_in_blocks(examples, [0], background_counts_series(examples["tokens"]), ThingsChat(), _encode,
                              settings)
    assert without.choices[0] == LabelChoice("sun", "keywords", 0.5)  # keywords beat the worse LLM label


def test_blocks_keep_the_choice_rule_on_random_features() -> None:
    examples = _examples()
    background = background_counts_series(examples["tokens"])
    given = {0: ["things", "animals"], 2: ["cat cat cat"], 5: ["", "car"]}
    runs = [label_in_blocks(examples, list(range(7)), background, Chat(), _encode, LabelSettings(n_shown=3),
                            block=b, explanations=given) for b in (2, 100)]
    for name in ("explanations", "llm_scores", "keyword_scores", "choices"):
        assert getattr(runs[0], name) == getattr(runs[1], name), name
    run = runs[0]
    assert set(run.explanations) == {0, 2, 5} and run.explanations[5][0] == "car"
    for f, choice in run.choices.items():
        expected = choose_label([Candidate("llm", run.llm[f][0], run.llm_scores.get(f)),
                                 Candidate("keywords", run.keywords[f], run.keyword_scores.get(f)),
                                 Candidate("explanation", *run.explanations.get(f, (None, None)))])
        assert choice == expected


def test_the_llm_labels_are_left_out_of_the_eta() -> None:
    class SlowChat(Chat):
        def chat(self, conversations, max_tokens):
            time.sleep(1.0)
            return super().chat(conversations, max_tokens)

    examples = _examples()
    messages: list[str] = []
    settings = LabelSettings(n_shown=3, n_holdout=2, llm_max_features=2, chunk=2)
    label_in_blocks(examples, list(range(7)), background_counts_series(examples["tokens"]), SlowChat(), _encode,
                    settings, report=messages.append, block=1)
    last = [m for m in messages if m.startswith("feature labels: 7/7")][-1]
    rate = float(re.search(r"\(100%\), ([\d,]+) features/s", last).group(1).replace(",", ""))
    assert rate > 7 / 1.0  # the second of LLM time is not in the rate; with it the rate would be below 7/s


def test_while_llm_labels_remain_they_stay_in_the_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    set_aside: list[float] = []

    class Recording(Progress):
        def set_aside(self, seconds: float) -> None:
            set_aside.append(seconds)
            super().set_aside(seconds)

    monkeypatch.setattr(blocks, "Progress", Recording)
    examples = _examples()
    settings = LabelSettings(n_shown=3, n_holdout=2, llm_max_features=5, chunk=2)
    run = label_in_blocks(examples, list(range(7)), background_counts_series(examples["tokens"]), Chat(), _encode,
                          settings, block=2)
    assert set_aside == [run.llm_seconds]  # once, after the third block's (the last) LLM labels
