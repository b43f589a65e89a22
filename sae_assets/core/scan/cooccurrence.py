"""Feature co-occurrence over non-overlapping token windows (SFAL's definition).

A document (BOS dropped, truncated to the scan's context) is cut into non-overlapping windows of
``k`` tokens, the trailing remainder dropped. A feature is *present* in a window if it fires anywhere
in it. ``C[i, j]`` counts the windows where both ``i`` and ``j`` are present; the diagonal holds each
feature's marginal count.

Counts are accumulated on the device in one ``[d_sae, d_sae]`` int32 matrix (4 d_sae^2 bytes: 1 GiB at
16,384 latents, 4 GiB at 32,768), upper triangle only and in row blocks, over the features present in the
batch, so no other ``d_sae^2`` temporary is ever made. They are stored as one row per feature, its
co-occurrence histogram: ``feature``, ``marginal`` (= ``C[i, i]``), ``partners`` (every ``j != i`` with
``C[i, j] > 0``, ascending, list<int32>), ``counts`` (aligned, list<int32>) and ``n_windows``. Rows are full
(each pair appears in both of its features' rows), so one feature's partners are one row, and a table is
produced and read in row blocks, never whole. At 16k latents the triplet form held ~134M pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import torch

COOCCURRENCE_SCHEMA = pa.schema([
    ("feature", pa.int32()),
    ("marginal", pa.int32()),
    ("partners", pa.list_(pa.int32())),
    ("counts", pa.list_(pa.int32())),
    ("n_windows", pa.int64()),
])
ROW_BLOCK = 512
"""Feature rows per accumulation block."""
BATCH_ROWS = 128
"""Feature rows per written record batch: its (row, partner) index pairs are 16 bytes each, so a batch of a
32k-latent SAE's nearly full rows takes ~70 MB while it is built."""
FLUSH_WINDOWS = 1024
"""Windows buffered before they are counted: one product over many windows costs the same multiply-adds as many
small ones, but the ``[block, d_sae]`` conversion and scatter per block are paid once instead of per batch."""
DENSE_FRACTION = 0.75
"""A batch where more than this fraction of features is present is accumulated without compaction."""


def window_presence(feats: torch.Tensor, k: int, threshold: float = 0.0) -> torch.Tensor:
    """``feats [n_tokens, d_sae]`` of one document (BOS already dropped) -> ``[n_windows, d_sae]`` bool."""
    n_windows = feats.shape[0] // k
    if n_windows == 0:
        return torch.zeros((0, feats.shape[1]), dtype=torch.bool, device=feats.device)
    windows = feats[: n_windows * k].reshape(n_windows, k, feats.shape[1])
    return windows.amax(dim=1) > threshold


def counts_bytes(d_sae: int) -> int:
    """Device memory the counter holds for ``d_sae`` latents (the int32 matrix)."""
    return 4 * d_sae * d_sae


class CooccurrenceCounter:
    """Accumulates the upper triangle of ``C = P^T P`` over window-presence matrices ``P``."""

    def __init__(self, d_sae: int, device: torch.device, block: int = ROW_BLOCK,
                 flush_windows: int = FLUSH_WINDOWS) -> None:
        self.d_sae, self.block, self.flush_windows = d_sae, block, flush_windows
        self.upper = torch.zeros((d_sae, d_sae), dtype=torch.int32, device=device)
        """``C[i, j]`` for ``i <= j``; below the diagonal: zeros until :meth:`counts` mirrors it."""
        self.n_windows = 0
        self._symmetric = False
        self._pending: list[torch.Tensor] = []
        self._pending_windows = 0

    def add(self, presence: torch.Tensor) -> None:
        """``presence [n_windows, d_sae]`` bool, buffered and counted ``flush_windows`` windows at a time."""
        if self._symmetric:
            raise RuntimeError("The counter was already read out; make a new one to count again.")
        if presence.shape[0] == 0:
            return
        self._pending.append(presence)
        self._pending_windows += presence.shape[0]
        self.n_windows += presence.shape[0]
        if self._pending_windows >= self.flush_windows:
            self._flush()

    def _flush(self) -> None:
        """Count the buffered windows. Only features present in some window take part, and the products are
        formed ``block`` rows at a time: ``[block, d_sae]`` temporaries at most."""
        if not self._pending:
            return
        presence = torch.cat(self._pending)
        self._pending, self._pending_windows = [], 0
        present = presence.any(dim=0).nonzero().squeeze(1)  # [a] ascending
        a = int(present.shape[0])
        if a == 0:
            return
        compact = a <= DENSE_FRACTION * self.d_sae
        # float32 products are exact while a batch has < 2^24 windows; the running sum stays in int32.
        p = presence[:, present].to(torch.float32) if compact else presence.to(torch.float32)  # [n, a]
        for start in range(0, p.shape[1], self.block):
            stop = min(start + self.block, p.shape[1])
            prod = (p[:, start:stop].T @ p[:, start:]).round_().to(torch.int32)  # [b, a - start]
            if compact:  # (row, column) pairs are distinct, so a gather-add-scatter is exact
                rows, cols = present[start:stop].unsqueeze(1), present[start:].unsqueeze(0)
                self.upper[rows, cols] += prod
            else:
                self.upper[start:stop, start:] += prod

    def counts(self) -> torch.Tensor:
        """The symmetric ``[d_sae, d_sae]`` int32 matrix (mirrored in place, block by block, on first call)."""
        if not self._symmetric:
            self._flush()
            for start in range(0, self.d_sae, self.block):  # rows of a block: mirror its tile, then copy
                stop = min(start + self.block, self.d_sae)  # the columns left of it from the rows above
                tile = self.upper[start:stop, start:stop]
                tile.copy_(torch.triu(tile) + torch.triu(tile, 1).T)
                self.upper[start:stop, :start] = self.upper[:start, start:stop].T
            self._symmetric = True
        return self.upper

    def n_pairs(self) -> int:
        """Feature pairs ``i < j`` that co-occur in some window (counted block by block)."""
        counts, pairs = self.counts(), 0
        for start in range(0, self.d_sae, self.block):
            pairs += int(torch.triu(counts[start:start + self.block], start + 1).count_nonzero())
        return pairs

    def marginals(self) -> torch.Tensor:
        return self.counts().diagonal().clone()

    def record_batches(self, rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The table (:data:`COOCCURRENCE_SCHEMA`) in blocks of ``rows`` feature rows."""
        counts = self.counts()
        for start in range(0, self.d_sae, rows):
            yield histogram_batch(counts[start:start + rows], start, self.n_windows)

    def to_frame(self) -> pl.DataFrame:
        """The whole table at once: for tests and small SAEs (writers use :meth:`record_batches`)."""
        return pl.DataFrame(pa.Table.from_batches(list(self.record_batches()), COOCCURRENCE_SCHEMA))


def histogram_batch(rows: torch.Tensor, first: int, n_windows: int) -> pa.RecordBatch:
    """Rows ``first .. first + b`` of the symmetric count matrix (``rows [b, d]``) as histogram rows."""
    b = rows.shape[0]
    features = torch.arange(first, first + b, device=rows.device)
    marginal = rows[torch.arange(b, device=rows.device), features]
    keep = rows > 0
    keep[torch.arange(b, device=rows.device), features] = False
    where = keep.nonzero()  # [nnz, 2], row-major: partners ascending within a row
    offsets = np.zeros(b + 1, dtype=np.int32)
    np.cumsum(keep.sum(dim=1).cpu().numpy(), out=offsets[1:])
    offsets_arr = pa.array(offsets)
    partners = pa.ListArray.from_arrays(offsets_arr, pa.array(where[:, 1].to(torch.int32).cpu().numpy()))
    counts = pa.ListArray.from_arrays(offsets_arr, pa.array(rows[where[:, 0], where[:, 1]].cpu().numpy()))
    return pa.RecordBatch.from_arrays([
        pa.array(features.to(torch.int32).cpu().numpy()), pa.array(marginal.cpu().numpy()), partners, counts,
        pa.array(np.full(b, n_windows, dtype=np.int64)),
    ], schema=COOCCURRENCE_SCHEMA)


def dense_counts(batches: pl.DataFrame | Iterable[pl.DataFrame | pa.RecordBatch], d_sae: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Inverse of the histogram table: the symmetric ``[d_sae, d_sae]`` int32 matrix, filled from a frame or
    from record batches of it one at a time (so the table is never held whole)."""
    c = torch.zeros((d_sae, d_sae), dtype=torch.int32, device=device)
    for batch in [batches] if isinstance(batches, pl.DataFrame) else batches:
        frame = batch if isinstance(batch, pl.DataFrame) else pl.DataFrame(batch)
        features = frame["feature"].to_numpy().astype(np.int64)
        lengths = frame["partners"].list.len().to_numpy().astype(np.int64)
        rows = torch.from_numpy(np.repeat(features, lengths)).to(device)
        cols = torch.from_numpy(frame["partners"].explode().drop_nulls().to_numpy().astype(np.int64)).to(device)
        vals = torch.from_numpy(frame["counts"].explode().drop_nulls().to_numpy().astype(np.int32)).to(device)
        c[rows, cols] = vals
        idx = torch.from_numpy(features).to(device)
        c[idx, idx] = torch.from_numpy(frame["marginal"].to_numpy().astype(np.int32)).to(device)
    return c
