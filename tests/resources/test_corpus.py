from __future__ import annotations

import json
from pathlib import Path

import pytest

from sae_assets.resources.corpus import OFFLINE_WIKI, CorpusError, CorpusResource, load_corpus


def test_offline_wiki_summaries() -> None:
    corpus = CorpusResource().load()
    assert corpus.name == OFFLINE_WIKI
    assert len(corpus) > 10_000 - 100  # 10,033 summaries, a few empty
    assert all(doc.strip() for doc in corpus.documents)
    assert CorpusResource().load().documents[:5] == corpus.documents[:5]  # seeded order
    assert CorpusResource(shuffle_seed=1).load().documents[:5] != corpus.documents[:5]
    assert len(CorpusResource(max_documents=7).load()) == 7


def test_jsonl_corpus(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"body": t}) for t in ["one", "", "two", "  "]))
    corpus = load_corpus("ignored", column="body", path=str(path), shuffle_seed=None)
    assert corpus.documents == ("one", "two")


def test_empty_corpus_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": "   "}))
    with pytest.raises(CorpusError, match="has no non-empty text in column 'text'"):
        load_corpus("x", path=str(path))


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"body": "words"}) + "\n")
    with pytest.raises(CorpusError, match=r"without column 'text' \(columns: \['body'\]\)"):
        load_corpus("x", path=str(path))


def test_unreachable_hf_dataset_is_a_clear_error() -> None:
    with pytest.raises(CorpusError, match="Could not open Hugging Face dataset 'no-such/dataset-xyz'"):
        load_corpus("no-such/dataset-xyz")
