from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from sae_assets.core.labels.evidence import add_prompt_evidence, gather_evidence, read_selection
from sae_assets.core.labels.labelling import label_messages


def _row(feature, kind, rank, act, quantile=None):
    return {"feature": feature, "kind": kind, "rank": rank, "quantile": quantile, "activation": act,
            "tokens": [f"{kind}{rank}"], "token_activations": [act]}


def test_evidence_split() -> None:
    rows = ([_row(1, "top", r, 10.0 - r) for r in range(5)]
            + [_row(1, "quantile", 0, 0.5, 0), _row(1, "quantile", 0, 2.0, 1)]
            + [_row(1, "random", r, 0.0) for r in range(3)] + [_row(1, "random", 3, 0.7)]
            + [_row(2, "random", 0, 0.0)])
    ev = gather_evidence(pl.DataFrame(rows), [1, 2], n_shown=3, n_holdout=3)
    assert [w.tokens[0] for w in ev[1].shown] == ["top0", "top1", "top2"]
    # held-out: never shown, activating; spread over top leftovers and quantile bins
    held = [w.tokens[0] for w in ev[1].positives]
    assert len(held) == 3 and not set(held) & {"top0", "top1", "top2"}
    assert [w.tokens[0] for w in ev[1].negatives] == ["random0", "random1", "random2"]  # the firing one is out
    assert ev[2].shown == [] and len(ev[2].negatives) == 1


def test_selection_forms(tmp_path: Path) -> None:
    assert read_selection(None, None) == (None, None)
    assert read_selection([3, 1], None) == ([3, 1], None)
    f = tmp_path / "sel.json"
    f.write_text(json.dumps({"feature_indices": [5, 7], "scores": [0.2, 0.1]}))
    assert read_selection(None, str(f)) == ([5, 7], [0.2, 0.1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"feature_indices": []}, "empty"),
        ({"feature_indices": [1, 2], "scores": [1.0]}, "1 scores for 2 feature indices"),
        ({"features": [1]}, "must hold"),
        ({"feature_indices": [1.5]}, "must be integers"),
    ],
)
def test_bad_selection_files(tmp_path: Path, content: dict, message: str) -> None:
    f = tmp_path / "sel.json"
    f.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        read_selection(None, str(f))
    with pytest.raises(ValueError, match="not both"):
        read_selection([1], str(f))
    with pytest.raises(ValueError, match="Cannot read"):
        read_selection(None, str(tmp_path / "missing.json"))


def test_optimized_prompts_join_the_labellers_evidence() -> None:
    ev = gather_evidence(pl.DataFrame([_row(1, "top", 0, 3.0), _row(2, "top", 0, 1.0)]), [1, 2], 4, 2)
    prompts = pl.DataFrame({"feature": [1, 1, 2, 7], "tokens": [[" the", " moon"], [" x"], [" y"], [" z"]],
                            "position_activations": [[0.0, 4.0], [0.0], [0.5], [9.0]]})
    assert add_prompt_evidence(ev, prompts) == 2  # feature 1's silent prompt and feature 7 (not labelled) left out
    assert [w.text() for w in ev[1].extra] == [" the moon"] and [w.text() for w in ev[2].extra] == [" y"]
    shown = label_messages(ev[1].shown + ev[1].extra)
    assert "moon>>" in shown[-1]["content"]  # the prompt's activating token is marked for the labeller
