from __future__ import annotations

import pytest

from sae_assets.core.alignment.explanations import (
    MalformedRecord,
    RecordTally,
    TooManyMalformed,
    choose_explanations,
    normalize,
)


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


@pytest.mark.parametrize(("description", "what"), [
    (42, "is a number (42), not text"), (None, "is null, not text"), (["a", "b"], "is a list, not text"),
    ({"text": "a"}, "is an object, not text"), (True, "is a boolean (true), not text"), ("  ", "is blank")])
def test_a_description_that_is_not_text_is_named_with_where_and_what(description, what) -> None:
    with pytest.raises(MalformedRecord) as err:
        normalize(_rec(5, description), "v1/m/s/explanations/batch-2.jsonl.gz line 17")
    assert str(err.value) == f"v1/m/s/explanations/batch-2.jsonl.gz line 17: 'description' of feature 5 {what}"


def test_the_tally_skips_and_counts_malformed_records_up_to_a_fraction() -> None:
    tally = RecordTally()
    records = [_rec(i, f"feature {i}") for i in range(300)]
    records[10]["description"], records[20]["description"], records[30] = 7, None, ["not", "a", "record"]
    kept = [r for line, raw in enumerate(records, start=1) if (r := tally.keep(raw, f"b-0 line {line}")) is not None]
    assert len(kept) == 297 and (tally.read, tally.skipped) == (300, 3)
    assert tally.problems == {"'description' is a number": 1, "'description' is null": 1, "the record is a list": 1}
    assert tally.examples == ["b-0 line 11: 'description' of feature 10 is a number (7), not text",
                              "b-0 line 21: 'description' of feature 20 is null, not text",
                              "b-0 line 31: the record is a list, not an object"]
    tally.check(0.01)  # 1% of 300 records
    with pytest.raises(TooManyMalformed, match=r"^3 of 300 records \(1.00%\) malformed: 'description' is a number "
                       r"\(1\), .*; e.g. b-0 line 11: 'description' of feature 10 is a number \(7\), not text\. "
                       r"That is more than max_malformed_fraction = 0.005 allows"):
        tally.check(0.005)
