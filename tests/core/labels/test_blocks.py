from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from sae_assets.core.labels.blocks import AllLabelCallsFailed, LabelSettings, label_in_blocks
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
