from __future__ import annotations

import pytest

from sae_assets.core.alignment.explanations import MalformedRecord, choose_explanations, normalize


def _rec(index, description, type_name="oai_token-act-pair", model="gpt-4o-mini", created=""):
    return {"modelId": "gemma-2-2b", "layer": "12-gemmascope-res-16k", "index": index, "description": description,
            "typeName": type_name, "explanationModelName": model, "authorId": "x", "createdAt": created}


def test_one_explanation_per_feature_by_the_documented_rule() -> None:
    records = [
        _rec("3", "old", created="2024-01-01T00:00:00Z"),
        _rec(3, "new", created="2024-06-01T00:00:00Z"),
        _rec(3, "other type, newest", type_name="np_max-act-logits", created="2025-01-01T00:00:00Z"),
        _rec("10", "preferred model", model="claude-3-5-sonnet"),
        _rec(10, "other model"),
        _rec(" 7 ", "only one"),
        _rec(8, "same everything, read first"),
        _rec(8, "same everything, read last"),
    ]
    frame = choose_explanations([normalize(r, "t") for r in records], "neuronpedia",
                                preferred_types=["oai_token-act-pair"], preferred_models=["claude-3-5-sonnet"])
    rows = {r["feature"]: r for r in frame.iter_rows(named=True)}
    assert list(rows) == [3, 7, 8, 10]
    assert rows[3]["description"] == "new" and rows[3]["n_alternatives"] == 2
    assert rows[10]["description"] == "preferred model" and rows[10]["explainer_model"] == "claude-3-5-sonnet"
    assert rows[7]["n_alternatives"] == 0 and rows[8]["description"] == "same everything, read last"
    assert set(frame["source"]) == {"neuronpedia"}


@pytest.mark.parametrize("record", [{"description": "no index"}, {"index": "x1", "description": "d"},
                                    {"index": 4, "description": None}])
def test_malformed_records(record) -> None:
    with pytest.raises(MalformedRecord, match="batch-0"):
        normalize(record, "batch-0.jsonl.gz line 3")


def test_empty() -> None:
    assert choose_explanations([], "neuronpedia").is_empty()
