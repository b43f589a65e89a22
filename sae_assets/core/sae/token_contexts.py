"""Documents -> fixed-length token contexts, each starting with BOS (as SAELens trains)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch


def pack_contexts(
    documents: Iterable[str],
    tokenize: Callable[[str], list[int]],
    bos_token_id: int,
    context_size: int,
    n_contexts: int,
) -> torch.Tensor:
    """Concatenate documents (each followed by BOS as a separator) and cut them into contexts.

    Returns ``[n_contexts, context_size]`` int64; every row starts with BOS, so position 0 is the
    attention sink the platform keeps out of training and statistics. Raises ``ValueError`` when the
    documents hold fewer tokens than asked for.
    """
    if context_size < 2:
        raise ValueError(f"context_size must be at least 2 (BOS + one token), not {context_size}.")
    body = context_size - 1
    rows: list[list[int]] = []
    pending: list[int] = []
    n_docs = 0
    for text in documents:
        if not text or not text.strip():
            continue
        n_docs += 1
        pending.extend(tokenize(text))
        pending.append(bos_token_id)
        while len(pending) >= body and len(rows) < n_contexts:
            rows.append([bos_token_id, *pending[:body]])
            pending = pending[body:]
        if len(rows) >= n_contexts:
            break
    if len(rows) < n_contexts:
        raise ValueError(
            f"The corpus gave only {len(rows)} contexts of {context_size} tokens from {n_docs} non-empty "
            f"documents; {n_contexts} were needed. Use a larger corpus or fewer tokens."
        )
    return torch.tensor(rows, dtype=torch.long)


def batches(tokens: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Row batches of ``tokens [n, seq]``."""
    for start in range(0, tokens.shape[0], batch_size):
        yield tokens[start : start + batch_size]


def held_out_contexts(documents: Sequence[str], tokenize: Callable[[str], list[int]], bos_token_id: int,
                      context_size: int, n_contexts: int) -> tuple[torch.Tensor, int]:
    """:func:`pack_contexts` of the documents read from the corpus's end backwards, and the lowest document index
    it reached. The trainer and the scan read from the start, so these are documents neither saw while the two
    ranges do not meet (the caller checks with the index)."""
    reached = len(documents)

    def backwards() -> Iterator[str]:
        nonlocal reached
        for index in range(len(documents) - 1, -1, -1):
            reached = index
            yield documents[index]

    return pack_contexts(backwards(), tokenize, bos_token_id, context_size, n_contexts), reached
