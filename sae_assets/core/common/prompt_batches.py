"""Batches of prompts for a causal LM's ``generate``: similar lengths together, a shared prefix computed once.

Label prompts share their opening (system prompt, chat template, instructions: ~78 of ~390 SmolLM2 tokens in the
demo) and differ in length by up to half. Left-padding a batch as it comes spends the prefill on padding and on
the same opening once per row. Here prompts are ordered longest first before batching, so a batch's rows are of
similar length, and each batch is laid out as ``[shared prefix | padding | own tokens]``: the prefix is run once
at batch size 1 and its key/value cache repeated across the rows; the padding sits between it and each row's own
tokens, masked out, and positions follow the attention mask, so every row sees the positions it would alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PromptBatch:
    rows: list[int]
    """Indices of the batch's prompts in the caller's list."""
    input_ids: torch.Tensor
    """``[len(rows), shared + width]``: the shared prefix, then each row's own tokens right-aligned after padding."""
    attention_mask: torch.Tensor
    """``[len(rows), shared + width]``: 1 on the prefix and on each row's own tokens, 0 on padding."""
    shared: int
    """Leading tokens common to every row (0: plain left padding)."""


def longest_first(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of at most ``batch_size``, longest first (stable among equal lengths); also the
    embedder's batches of texts (``resources/embedder.py``)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), max(1, batch_size))]


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one of its own (the prefill needs a new token per
    row); 0 for a single prompt, where there is nothing to share."""
    if len(prompts) < 2:
        return 0
    common = len(os.path.commonprefix([list(p) for p in prompts]))
    return max(0, min(common, min(len(p) for p in prompts) - 1))


def layout(prompts: Sequence[Sequence[int]], rows: list[int], pad_id: int, share_prefix: bool = True) -> PromptBatch:
    """The batch of ``prompts[i] for i in rows`` (token ids, no padding)."""
    batch = [list(prompts[i]) for i in rows]
    shared = shared_prefix_length(batch) if share_prefix else 0
    width = max(len(p) for p in batch) - shared
    input_ids = torch.full((len(batch), shared + width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(batch):
        own = ids[shared:]
        input_ids[row, :shared] = torch.tensor(ids[:shared], dtype=torch.long)
        input_ids[row, input_ids.shape[1] - len(own) :] = torch.tensor(own, dtype=torch.long)
        mask[row, :shared] = 1
        mask[row, input_ids.shape[1] - len(own) :] = 1
    return PromptBatch(rows, input_ids, mask, shared)
