from __future__ import annotations

import numpy as np

from sae_assets.core.labels.evidence import FeatureEvidence
from sae_assets.core.labels.labelling import Window
from sae_assets.core.labels.runs import TextVectors, embedding_scores, llm_detection_scores, llm_labels
from sae_assets.resources.labeller import Reply


class ScriptedChat:
    """Replies from a function of the last user message; records every call."""

    def __init__(self, answer) -> None:
        self.answer, self.calls, self.sent = answer, [], []

    def chat(self, conversations, max_tokens):
        self.calls.append(len(conversations))
        self.sent.append([c[-1]["content"] for c in conversations])
        return [self.answer(c[-1]["content"]) for c in conversations]


def _evidence() -> dict[int, FeatureEvidence]:
    cat, dog, car = Window([" cat"], [1.0]), Window([" dog"], [1.0]), Window([" car"], [0.0])
    return {0: FeatureEvidence(0, shown=[cat], positives=[cat, dog], negatives=[car]),
            1: FeatureEvidence(1, shown=[dog], positives=[dog], negatives=[car]),
            2: FeatureEvidence(2)}


def test_llm_labels_keep_errors_as_errors() -> None:
    def answer(prompt: str) -> Reply:
        if "<<cat>>" in prompt:
            return Reply("Label: small pets")
        return Reply(None, "HTTP 500")

    chat = ScriptedChat(answer)
    out = llm_labels(chat, 8, _evidence(), chunk=1)
    assert out == {0: ("small pets", None), 1: (None, "HTTP 500")}  # feature 2 has nothing to show
    assert chat.calls == [1, 1]
    bad = llm_labels(ScriptedChat(lambda p: Reply("   ")), 8, _evidence(), chunk=4)
    assert bad[0][0] is None and bad[0][1].startswith("unparseable reply")


def test_llm_labels_send_prompts_of_similar_length_together() -> None:
    """Longest prompts first, by the backend's own measure where it has one (tokens), else by characters, so a
    chunk pads little; every feature's label still lands on that feature."""
    words = {0: "a", 1: "bb bb bb", 2: "c c", 3: "dddd dddd"}
    evidence = {f: FeatureEvidence(f, shown=[Window([" " + w], [1.0])]) for f, w in words.items()}

    def answer(prompt: str) -> Reply:
        return Reply(next(w.split()[0] for w in words.values() if f"<<{w}>>" in prompt))

    expected = {f: (w.split()[0], None) for f, w in words.items()}
    by_chars = ScriptedChat(answer)
    assert llm_labels(by_chars, 8, evidence, chunk=2) == expected
    assert [[next(w for w in words.values() if f"<<{w}>>" in p) for p in call] for call in by_chars.sent] == \
        [["dddd dddd", "bb bb bb"], ["c c", "a"]]

    class Measured(ScriptedChat):
        def prompt_lengths(self, conversations):  # a tokenizer that finds "c c" the longest, the rest alike
            return [10 if "<<c c>>" in c[-1]["content"] else 1 for c in conversations]

    measured = Measured(answer)
    assert llm_labels(measured, 8, evidence, chunk=2) == expected
    assert [[next(w for w in words.values() if f"<<{w}>>" in p) for p in call] for call in measured.sent] == \
        [["c c", "a"], ["bb bb bb", "dddd dddd"]]  # then ties in the caller's order


def test_detection_judge_auroc() -> None:
    judge = ScriptedChat(lambda p: Reply("yes" if ("cat" in p.split("Excerpt:")[1] or "dog" in p.split("Excerpt:")[1])
                                         else "no"))
    scores = llm_detection_scores(judge, {0: "pets", 1: "pets", 2: "pets"}, _evidence())
    assert scores == {0: 1.0, 1: 1.0}


def test_embedding_scores() -> None:
    vocab = {"cat": [1.0, 0.0], "dog": [0.9, 0.1], "car": [0.0, 1.0], "pets": [1.0, 0.05], "cars": [0.05, 1.0]}

    def encode(texts):
        v = np.array([vocab[t.strip()] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    assert embedding_scores(encode, {0: "pets", 1: "cars", 2: "pets"}, _evidence()) == {0: 1.0, 1: 0.0}


def test_text_vectors_embed_each_text_once_in_batches() -> None:
    vocab = {"cat": [1.0, 0.0], "dog": [0.9, 0.1], "car": [0.0, 1.0], "pets": [1.0, 0.05], "cars": [0.05, 1.0]}
    calls, polls = [], []

    def encode(texts):
        calls.append(list(texts))
        v = np.array([vocab[t.strip()] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    vectors = TextVectors(encode, batch=2, poll=lambda: polls.append(1))
    labels = {0: "pets", 1: "cars", 2: "pets"}
    assert embedding_scores(vectors, labels, _evidence()) == embedding_scores(encode, labels, _evidence())
    calls.clear()
    assert embedding_scores(vectors, {0: "cars", 1: "pets"}, _evidence()) == {0: 0.0, 1: 1.0}
    assert calls == []  # windows and labels seen before are not embedded again
    assert vectors.encoded == 5 and len(polls) == 3  # 5 distinct texts, batches of 2


def test_text_vectors_send_texts_of_similar_length_together() -> None:
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.ones((len(texts), 2), dtype=np.float32)

    texts = ["a", "a much longer window of text", "mid length", "tiny", "another long window here", "medium!!"]
    TextVectors(encode, batch=2)(texts)  # no lengths of its own: characters
    assert calls == [["a much longer window of text", "another long window here"], ["mid length", "medium!!"],
                     ["tiny", "a"]]
    calls.clear()
    encode.lengths = lambda texts: [t.count(" ") + 1 for t in texts]  # e.g. the embedder's tokens: words here
    TextVectors(encode, batch=2)(texts + ["1 2 3 4 5 6"])
    assert calls == [["1 2 3 4 5 6", "a much longer window of text"], ["another long window here", "mid length"],
                     ["a", "medium!!"], ["tiny"]]
