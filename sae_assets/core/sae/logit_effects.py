"""Logit effects: per SAE feature, the output tokens its decoder direction promotes and suppresses most through
the unembedding (the "logits" tables of Neuronpedia's feature dashboards).

What is computed, by default, is what SAEDashboard (the code that builds Neuronpedia's dashboards) does:

- ``SaeVisRunner.run`` calls ``fold_W_dec_norm()`` on the SAE first, so each decoder row is a unit vector, and
  computes ``logits = feature_resid_dir @ W_U`` (``sae_dashboard/sae_vis_runner.py``); the table is the top and
  bottom 10 of each row (``get_logits_table_data`` in ``sae_dashboard/data_parsing_fns.py``, ``n_rows = 10``).
- ``NeuronpediaRunner`` loads the model with ``HookedSAETransformer.from_pretrained_no_processing``
  (``sae_dashboard/neuronpedia/neuronpedia_runner.py``, since 2024-06), so ``W_U`` is the raw unembedding: no
  ``fold_ln``, no ``center_unembed``; its Hugging Face path takes ``lm_head.weight.T`` (``_get_hf_unembed_matrix``).
  The final norm is **not** applied: ``final_norm="none"`` (the default) reproduces Neuronpedia's tables.

``final_norm="fold"`` is TransformerLens's ``fold_ln`` for the unembedding instead
(``ProcessWeights._fold_unembed_layer_norm`` in ``transformer_lens/weight_processing.py``): ``W_U' = diag(s) W_U``
with ``s`` the final norm's elementwise weight (Gemma's RMSNorm: ``1 + w``), and for a LayerNorm model ``W_U'``
also centred over ``d_model`` (LayerNorm subtracts the residual's mean, so a direction acts through its centred
part). The input-dependent ``1 / rms`` (or ``1 / std``) is a positive scalar per position: it scales every token's
effect alike and changes no ranking, so neither mode models it. The two modes rank tokens alike only when the
norm's weight is uniform; SmolLM2's final RMSNorm weight is not (median 1.8, from -2.1 to 3.3 per coordinate).
Decoder rows must live in the residual stream the unembedding reads (``d_in == d_model``).

The ``d_sae x vocab`` product is never held whole (32,768 latents x a 256k vocabulary is 34 GB in float32): a
block of features at a time, the block sized from a memory budget, each block reduced to its top-k at once.
Equal logits go to the lower token id, so the result does not depend on the block size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import psutil
import pyarrow as pa
import torch

from sae_assets.core.common.language_model import Unembedding
from sae_assets.core.common.progress import Progress, Report
from sae_assets.core.common.similarity import unit_rows

FinalNorm = Literal["none", "fold"]
MIB = 1 << 20
BYTES_PER_LOGIT = 4
"""Working bytes per (feature, token) of a block: the float32 logit."""
BATCH_ROWS = 4096
"""Feature rows per written record batch (a batch of 4,096 rows x 20 tokens is about 2 MB)."""

LOGIT_EFFECTS_SCHEMA = pa.schema([
    ("feature", pa.int32()),
    ("promoted_ids", pa.list_(pa.int32())),
    ("promoted_tokens", pa.list_(pa.string())),
    ("promoted_values", pa.list_(pa.float32())),
    ("suppressed_ids", pa.list_(pa.int32())),
    ("suppressed_tokens", pa.list_(pa.string())),
    ("suppressed_values", pa.list_(pa.float32())),
])


@dataclass(frozen=True)
class LogitEffectsConfig:
    top_k: int = 10
    """Promoted and suppressed tokens kept per feature (Neuronpedia's tables: 10)."""
    final_norm: FinalNorm = "none"
    """``none``: the raw unembedding, as Neuronpedia; ``fold``: the final norm's weight folded into it (fold_ln)."""
    unit_decoder: bool = True
    """Scale each decoder row to unit norm first (SAEDashboard's ``fold_W_dec_norm``); rankings do not change."""
    memory_budget_mib: int = 256
    """Bound on a block's working memory: ``block x vocab x 4 bytes`` (its float32 logits)."""


@dataclass(frozen=True)
class LogitEffects:
    """Per feature (rows in decoder order): ``promoted_ids [d_sae, k]`` int64 and ``promoted_values [d_sae, k]``
    float32, largest first; ``suppressed_ids`` / ``suppressed_values`` the same, most negative first. CPU tensors."""

    promoted_ids: torch.Tensor
    promoted_values: torch.Tensor
    suppressed_ids: torch.Tensor
    suppressed_values: torch.Tensor
    vocab: int
    block_features: int
    n_blocks: int
    seconds: float
    peak_bytes: int
    """``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the process's largest RSS seen after a block."""
    peak_measure: str
    norm_handling: str


def block_rows(vocab: int, budget_bytes: int) -> int:
    """Features per block: the most whose ``[block, vocab]`` float32 logits fit ``budget_bytes`` (at least 1)."""
    return max(1, budget_bytes // (max(vocab, 1) * BYTES_PER_LOGIT))


def describe_norm(unembedding: Unembedding, final_norm: FinalNorm) -> str:
    """One sentence saying what was done with the final norm (for metadata)."""
    if final_norm == "none":
        return "none: raw W_U, final norm not applied (as Neuronpedia / SAEDashboard)"
    if unembedding.norm_kind is None:
        return "fold: the model has no final norm; raw W_U"
    parts = []
    if unembedding.norm_scale is not None:
        parts.append(f"{unembedding.norm_kind} norm weight folded into W_U")
    if unembedding.norm_kind == "layer":
        parts.append("W_U centred over d_model")
    return "fold: " + ("; ".join(parts) if parts else f"{unembedding.norm_kind} norm has no weight; raw W_U")


def effective_unembedding(unembedding: Unembedding, final_norm: FinalNorm,
                          device: torch.device | str) -> torch.Tensor:
    """``W_U' [d_model, vocab]`` float32 on ``device``: ``W_U`` (``none``), or ``diag(s) W_U``, centred over
    ``d_model`` for a LayerNorm (``fold``). A copy only where it differs from the model's tensor."""
    w_u = unembedding.w_u.to(device=device, dtype=torch.float32)
    if final_norm == "fold":
        if unembedding.norm_scale is not None:
            w_u = w_u * unembedding.norm_scale.to(device=device, dtype=torch.float32)[:, None]
        if unembedding.norm_kind == "layer":
            w_u = w_u - w_u.mean(dim=0, keepdim=True)
    return w_u


def _top_k_ordered(logits: torch.Tensor, k: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of ``logits [b, vocab]`` (largest or smallest): ``(ids [b, k] int64, values [b, k])``,
    best first, equal values by ascending token id. Rows with a tie across the k-th place (a zero decoder row ties
    every token) are fully sorted (stable), ``b // 8`` rows at a time, so the sort adds at most half the block
    (its values and int64 indices); the others are only re-ordered within their k. A tie across the k-th place shows as
    a (k+1)-th value equal to the k-th."""
    values, ids = torch.topk(logits, min(k + 1, logits.shape[1]), dim=1, largest=largest, sorted=True)
    tied = (values[:, k] == values[:, k - 1]).nonzero().flatten() if values.shape[1] > k else ids[:0, 0]
    values, ids = values[:, :k], ids[:, :k]
    step = max(1, logits.shape[0] // 8)
    for chunk in tied.split(step):
        rows = logits[chunk]
        order = torch.sort(rows, dim=1, descending=largest, stable=True).indices[:, :k]
        ids[chunk], values[chunk] = order, rows.gather(1, order)
        del rows
    # Within the k: ascending ids first, then a stable sort by value keeps them ascending among equals.
    by_id = torch.sort(ids, dim=1).indices
    ids, values = ids.gather(1, by_id), values.gather(1, by_id)
    by_value = torch.sort(values, dim=1, descending=largest, stable=True).indices
    return ids.gather(1, by_value), values.gather(1, by_value)


def compute_logit_effects(w_dec: torch.Tensor, unembedding: Unembedding,
                          config: LogitEffectsConfig = LogitEffectsConfig(),
                          device: torch.device | str = "cpu", report: Report | None = None,
                          block_features: int | None = None) -> LogitEffects:
    """``w_dec [d_sae, d_in]`` times ``W_U' [d_in, vocab]`` (see :func:`effective_unembedding`), reduced to each
    feature's top-k promoted and suppressed tokens, ``block_features`` features at a time (default: from
    ``config.memory_budget_mib``, :func:`block_rows`). Progress goes to ``report`` at most every 10 s."""
    if w_dec.ndim != 2:
        raise ValueError(f"W_dec must be [d_sae, d_in], got shape {tuple(w_dec.shape)}")
    if unembedding.w_u.ndim != 2 or unembedding.w_u.shape[0] != w_dec.shape[1]:
        raise ValueError(f"the decoder's d_in={w_dec.shape[1]} does not match the unembedding's d_model="
                         f"{unembedding.w_u.shape[0] if unembedding.w_u.ndim == 2 else tuple(unembedding.w_u.shape)}")
    if config.top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {config.top_k}")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    process = psutil.Process()
    peak_rss = process.memory_info().rss
    with torch.inference_mode():
        w_u = effective_unembedding(unembedding, config.final_norm, dev)
        d_sae, vocab = w_dec.shape[0], w_u.shape[1]
        k = min(config.top_k, vocab)
        block = block_features or block_rows(vocab, config.memory_budget_mib * MIB)
        outputs: list[list[torch.Tensor]] = [[], [], [], []]
        progress = Progress("logit_effects", d_sae, "features", report)
        for first in range(0, d_sae, block):
            rows = w_dec[first:first + block].to(device=dev, dtype=torch.float32)
            if config.unit_decoder:
                rows = unit_rows(rows)
            logits = rows @ w_u  # [block, vocab]
            if not cuda:
                peak_rss = max(peak_rss, process.memory_info().rss)
            for out, tensor in zip(outputs, (*_top_k_ordered(logits, k, True), *_top_k_ordered(logits, k, False)),
                                   strict=True):
                out.append(tensor.cpu())
            del logits
            progress.advance(rows.shape[0])
        progress.finish()
    empty = [torch.zeros((0, k), dtype=dtype) for dtype in (torch.int64, torch.float32) * 2]
    p_ids, p_values, s_ids, s_values = (torch.cat(out) if out else e for out, e in zip(outputs, empty, strict=True))
    return LogitEffects(
        promoted_ids=p_ids, promoted_values=p_values, suppressed_ids=s_ids, suppressed_values=s_values,
        vocab=vocab, block_features=block, n_blocks=math.ceil(d_sae / block), seconds=time.perf_counter() - start,
        peak_bytes=int(torch.cuda.max_memory_allocated(dev)) if cuda else int(peak_rss),
        peak_measure="torch.cuda.max_memory_allocated" if cuda else "process RSS",
        norm_handling=describe_norm(unembedding, config.final_norm))


def _list_column(values: np.ndarray, arrow_type: pa.DataType) -> pa.ListArray:
    """``values [rows, k]`` as a list<arrow_type> column of k-long rows."""
    rows, k = values.shape
    offsets = pa.array(np.arange(0, rows * k + 1, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=arrow_type))


def record_batches(effects: LogitEffects, features: Sequence[int] | np.ndarray,
                   token_strings: Callable[[list[int]], list[str]],
                   rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The table (:data:`LOGIT_EFFECTS_SCHEMA`), ``rows`` features per batch; ``features`` names each row of
    ``effects``. Each distinct token id is turned into its string once (``token_strings``: ids -> strings)."""
    k = effects.promoted_ids.shape[1]
    ids = torch.cat([effects.promoted_ids, effects.suppressed_ids], dim=1).numpy()
    distinct = np.unique(ids)
    lookup = np.array(token_strings([int(i) for i in distinct]) if distinct.size else [], dtype=object)
    feature_ids = np.asarray(features, dtype=np.int32)
    for first in range(0, len(feature_ids), rows):
        block = slice(first, first + rows)
        columns: list[pa.Array] = [pa.array(feature_ids[block], type=pa.int32())]
        for id_block, value_block in ((ids[block, :k], effects.promoted_values[block]),
                                      (ids[block, k:], effects.suppressed_values[block])):
            strings = lookup[np.searchsorted(distinct, id_block)]
            columns += [_list_column(id_block.astype(np.int32), pa.int32()), _list_column(strings, pa.string()),
                        _list_column(value_block.numpy().astype(np.float32), pa.float32())]
        yield pa.RecordBatch.from_arrays(columns, schema=LOGIT_EFFECTS_SCHEMA)
