from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from sae_assets.core.labels.labelling import (
    LabelParseError,
    Window,
    auroc,
    background_counts,
    background_counts_series,
    background_totals,
    detection_messages,
    embedding_detection_score,
    keyword_label,
    label_messages,
    parse_label,
    parse_yes_no,
)


def test_marked_windows_wrap_activating_tokens_only() -> None:
    w = Window(tokens=["The", " cat", " sat", " on", " the", " mat"], activations=[0, 2.0, 0.1, 0, 0, 1.5])
    assert w.marked() == "The <<cat>> sat on the <<mat>>"
    assert Window(tokens=["a", " b"], activations=[0, 0]).marked() == "a b"
    messages = label_messages([w, Window(["x", " y"], [1.0, 0.0])])
    assert messages[0]["role"] == "system" and "<<like this>>" in messages[0]["content"]
    assert "1. The <<cat>> sat on the <<mat>>\n2. <<x>> y" in messages[1]["content"]


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("Label: cats and other pets", "cats and other pets"),
        ('"Animal nouns."\nExtra chatter', "Animal nouns"),
        ("\n\n**years in dates**", "years in dates"),
        ("one two three four five six seven eight nine ten eleven", "one two three four five six seven eight nine"),
        ("<<mat>> tokens", "mat tokens"),
        ("1. years in dates", "years in dates"),
        ("- place names", "place names"),
        ("1918 events", "1918 events"),
        ("Excerpts:\nplace names", "place names"),
    ],
)
def test_parse_label(reply: str, label: str) -> None:
    assert parse_label(reply) == label


@pytest.mark.parametrize("reply", ["", "   \n  ", "Label:", '""', "1. 2. 3. 4. 5. 6. 7", "Excerpts:"])
def test_unparseable_replies_raise(reply: str) -> None:
    with pytest.raises(LabelParseError):
        parse_label(reply)


def test_keyword_label_prefers_tokens_rare_in_the_background() -> None:
    background = background_counts([[" the", " of", " the", " cat"]] * 50 + [[" dog"]])
    activating = [" the", " cat", " cat", " dog", " dog", " dog", ",", " "]
    label = keyword_label(activating, background, n_keywords=2)
    assert label == "dog, cat"
    assert keyword_label([",", " "], background) == ""


def test_auroc() -> None:
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    assert auroc([2, 0], [1]) == 0.5
    assert np.isnan(auroc([], [1]))


def test_embedding_detection_score() -> None:
    label = np.array([1.0, 0.0])
    pos = np.array([[0.9, 0.1], [0.8, 0.6]])
    neg = np.array([[0.1, 0.99], [0.0, 1.0]])
    assert embedding_detection_score(label, pos, neg) == 1.0


def test_detection_prompt_and_answer() -> None:
    msgs = detection_messages("cats", Window(["A", " cat"], [0, 1]))
    assert "Feature description: cats" in msgs[1]["content"] and "Excerpt: A cat" in msgs[1]["content"]
    assert parse_yes_no("Yes.") is True and parse_yes_no("no, it does not") is False
    assert parse_yes_no("maybe") is None


def test_keyword_label_is_defined_for_any_counts() -> None:
    import random

    rng = random.Random(0)
    words = [f" w{i}" for i in range(30)]
    for _ in range(200):
        background = Counter({w.strip(): rng.randint(0, 50) for w in rng.sample(words, rng.randint(0, 30))})
        activating = [rng.choice(words) for _ in range(rng.randint(1, 40))]
        label = keyword_label(activating, background)
        assert label and all(part.startswith("w") for part in label.split(", "))


def test_background_counts_of_a_column_equal_the_python_ones() -> None:
    windows = [[" The", " cat", ",", " the", "\n", " Cat", "42"], [" dog", " the", " ", "É", " é"], [], [" cat"]]
    expected = background_counts(windows)
    for rows_per_block in (1, 2, 100):  # blocks of rows counted apart, then summed
        assert background_counts_series(pl.Series(windows), rows_per_block) == expected
    assert background_totals(expected) == (sum(expected.values()), len(expected))


def test_keyword_label_with_precomputed_totals_is_the_same() -> None:
    background = Counter({"the": 50, "cat": 2, "dog": 3})
    activating = [" cat", " cat", " kitten", " the"]
    assert keyword_label(activating, background, totals=background_totals(background)) == keyword_label(
        activating, background)
