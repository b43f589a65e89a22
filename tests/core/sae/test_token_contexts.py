from __future__ import annotations

import pytest
import torch

from sae_assets.core.sae.token_contexts import batches, pack_contexts

BOS = 0


def _tok(text: str) -> list[int]:
    return [int(w) for w in text.split()]


def test_contexts_start_with_bos_and_keep_document_order() -> None:
    docs = ["1 2 3", "", "4 5", "6 7 8 9 10"]
    ctx = pack_contexts(docs, _tok, BOS, context_size=4, n_contexts=3)
    # stream: 1 2 3 B 4 5 B 6 7 8 9 10 B -> bodies of 3 tokens
    assert ctx.tolist() == [[0, 1, 2, 3], [0, 0, 4, 5], [0, 0, 6, 7]]
    assert ctx.dtype == torch.long


def test_too_small_corpus_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"only 1 contexts of 4 tokens from 1 non-empty documents; 5 were needed"):
        pack_contexts(["1 2 3"], _tok, BOS, context_size=4, n_contexts=5)
    with pytest.raises(ValueError, match="at least 2"):
        pack_contexts(["1"], _tok, BOS, context_size=1, n_contexts=1)


def test_batches_cover_all_rows() -> None:
    rows = torch.arange(10).reshape(5, 2)
    assert [b.shape[0] for b in batches(rows, 2)] == [2, 2, 1]
    assert torch.equal(torch.cat(list(batches(rows, 2))), rows)
