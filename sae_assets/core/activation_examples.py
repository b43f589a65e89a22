"""Streaming selection of activating examples per feature (SAEDashboard / delphi style).

An example is one document's peak for one feature: the token where the feature is largest in that
document, with the window of ``2 * radius + 1`` tokens around it and the feature's activation on each.
Three kinds are kept, each in fixed-size device buffers whatever the corpus size:

- ``top``: the ``top_k`` documents with the largest peaks;
- ``quantile``: a uniform reservoir sample of the documents where the feature fires, cut at the end
  into ``n_quantiles`` equal-count activation bins with ``per_quantile`` examples from each;
- ``random``: ``n_random`` windows drawn uniformly from the corpus, the same for every feature
  (mostly non-activating: the contrast that label scoring needs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

WINDOW_PAD = -1  # token id of positions outside the document


@dataclass(frozen=True)
class ExampleConfig:
    top_k: int = 20
    """Top-activating documents kept per feature."""
    n_quantiles: int = 10
    """Equal-count activation bins for quantile examples."""
    per_quantile: int = 2
    """Quantile examples drawn from each bin."""
    reservoir: int = 64
    """Activating documents sampled per feature, from which quantile examples are drawn."""
    n_random: int = 10
    """Random windows (shared by all features)."""
    radius: int = 16
    """Tokens kept on each side of the peak."""
    seed: int = 0


class _Buffer:
    """Per-feature best-``size`` entries by ``key``: value, doc, position and the window around it."""

    def __init__(self, size: int, d_sae: int, width: int, device: torch.device) -> None:
        self.key = torch.full((size, d_sae), float("-inf"), device=device)
        self.value = torch.zeros((size, d_sae), device=device)
        self.doc = torch.full((size, d_sae), -1, dtype=torch.int64, device=device)
        self.pos = torch.zeros((size, d_sae), dtype=torch.int64, device=device)
        self.acts = torch.zeros((size, d_sae, width), device=device)
        self.tokens = torch.full((size, d_sae, width), WINDOW_PAD, dtype=torch.int32, device=device)

    def merge(self, key, value, doc, pos, acts, tokens) -> None:
        """Candidates ``[b, d_sae]`` (windows ``[b, d_sae, width]``); ``key = -inf`` never enters."""
        all_key = torch.cat([self.key, key])
        order = all_key.topk(self.key.shape[0], dim=0).indices  # [size, d_sae]
        self.key = all_key.gather(0, order)
        self.value = torch.cat([self.value, value]).gather(0, order)
        self.doc = torch.cat([self.doc, doc]).gather(0, order)
        self.pos = torch.cat([self.pos, pos]).gather(0, order)
        idx = order.unsqueeze(-1).expand(-1, -1, self.acts.shape[-1])
        self.acts = torch.cat([self.acts, acts]).gather(0, idx)
        self.tokens = torch.cat([self.tokens, tokens]).gather(0, idx)


class ExampleCollector:
    def __init__(self, d_sae: int, cfg: ExampleConfig, device: torch.device) -> None:
        self.cfg, self.d_sae, self.device = cfg, d_sae, device
        self.width = 2 * cfg.radius + 1
        self.offsets = torch.arange(-cfg.radius, cfg.radius + 1, device=device)
        self.top = _Buffer(cfg.top_k, d_sae, self.width, device)
        self.sample = _Buffer(cfg.reservoir, d_sae, self.width, device)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.random_key = torch.full((cfg.n_random,), float("-inf"), device=device)
        self.random_doc = torch.full((cfg.n_random,), -1, dtype=torch.int64, device=device)
        self.random_pos = torch.zeros((cfg.n_random,), dtype=torch.int64, device=device)
        self.random_acts = torch.zeros((cfg.n_random, self.width, d_sae), device=device)
        self.random_tokens = torch.full((cfg.n_random, self.width), WINDOW_PAD, dtype=torch.int32, device=device)

    def _windows(self, center: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions ``[..., width]`` around ``center`` and whether each lies inside its document (not BOS)."""
        positions = center.unsqueeze(-1) + self.offsets
        inside = (positions >= 1) & (positions < lengths.view(-1, *([1] * (positions.ndim - 1))))
        return positions.clamp(min=0), inside

    def add(self, doc_index: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
            feats: torch.Tensor, valid: torch.Tensor) -> None:
        """``doc_index [b]``, ``tokens [b, seq]``, ``lengths [b]``, ``feats [b, seq, d_sae]``, ``valid [b, seq]``."""
        b, seq, d_sae = feats.shape
        masked = feats.masked_fill(~valid.unsqueeze(-1), float("-inf"))
        peak, pos = masked.max(dim=1)  # [b, d_sae]
        fired = peak > 0
        positions, inside = self._windows(pos, lengths)  # [b, d_sae, width]
        positions = positions.clamp(max=seq - 1)
        by_feature = feats.transpose(1, 2)  # [b, d_sae, seq]
        acts = by_feature.gather(2, positions).masked_fill(~inside, 0.0)
        window_tokens = tokens.to(torch.int32).unsqueeze(1).expand(-1, d_sae, -1).gather(2, positions)
        window_tokens = window_tokens.masked_fill(~inside, WINDOW_PAD)
        docs = doc_index.to(self.device).view(-1, 1).expand(-1, d_sae)
        peak = peak.masked_fill(~fired, 0.0)
        top_key = torch.where(fired, peak, float("-inf"))
        self.top.merge(top_key, peak, docs, pos, acts, window_tokens)
        priority = torch.rand((b, d_sae), generator=self.generator, device=self.device)
        self.sample.merge(torch.where(fired, priority, float("-inf")), peak, docs, pos, acts, window_tokens)
        self._add_random(doc_index, tokens, lengths, feats)

    def _add_random(self, doc_index, tokens, lengths, feats) -> None:
        b, seq, _ = feats.shape
        n_valid = (lengths - 1).clamp(min=0).to(self.device)
        if int(n_valid.sum()) == 0:
            return
        # one uniform candidate token per document, weighted by its length through the priority
        u = torch.rand((b,), generator=self.generator, device=self.device)
        center = 1 + (torch.rand((b,), generator=self.generator, device=self.device) * n_valid).long()
        center = torch.minimum(center, (lengths.to(self.device) - 1).clamp(min=1))
        key = torch.where(n_valid > 0, u.log() / n_valid.clamp(min=1).float(), float("-inf"))  # A-Res weights
        all_key = torch.cat([self.random_key, key])
        keep = all_key.topk(self.cfg.n_random).indices
        positions, inside = self._windows(center, lengths.to(self.device))  # [b, width]
        positions = positions.clamp(max=seq - 1)
        acts = feats.gather(1, positions.unsqueeze(-1).expand(-1, -1, feats.shape[-1]))
        acts = acts.masked_fill(~inside.unsqueeze(-1), 0.0)
        window_tokens = tokens.to(self.device, torch.int32).gather(1, positions).masked_fill(~inside, WINDOW_PAD)
        self.random_key = all_key[keep]
        self.random_doc = torch.cat([self.random_doc, doc_index.to(self.device)])[keep]
        self.random_pos = torch.cat([self.random_pos, center])[keep]
        self.random_acts = torch.cat([self.random_acts, acts])[keep]
        self.random_tokens = torch.cat([self.random_tokens, window_tokens])[keep]

    def to_frame(self, token_strings: Callable[[list[int]], list[str]]) -> pl.DataFrame:
        """All examples as rows; ``token_strings`` maps token ids to display strings."""
        frame = pl.concat([self._top_rows(), self._quantile_rows(), self._random_rows()], how="vertical")
        ids = frame["token_ids"].explode().drop_nulls().unique().sort().to_list()
        mapping = pl.DataFrame({"id": pl.Series(ids, dtype=pl.Int32),
                                "str": pl.Series(token_strings(ids), dtype=pl.String)})
        strings = (frame.select(pl.int_range(pl.len()).alias("row"), "token_ids").explode("token_ids")
                   .join(mapping, left_on="token_ids", right_on="id", how="left", maintain_order="left")
                   .group_by("row", maintain_order=True).agg(pl.col("str").alias("tokens")))
        return frame.with_columns(strings.sort("row")["tokens"]).select(EXAMPLE_COLUMNS)

    def _top_rows(self) -> pl.DataFrame:
        t = self.top
        rank, feature = np.meshgrid(np.arange(t.key.shape[0]), np.arange(self.d_sae), indexing="ij")
        keep = (t.key > float("-inf")).cpu().numpy()
        return _rows(feature[keep], rank[keep], np.full(keep.sum(), -1), t.value.cpu().numpy()[keep],
                     t.doc.cpu().numpy()[keep], t.pos.cpu().numpy()[keep], t.acts.cpu().numpy()[keep],
                     t.tokens.cpu().numpy()[keep], "top")

    def _quantile_rows(self) -> pl.DataFrame:
        s, cfg = self.sample, self.cfg
        rng = np.random.default_rng(cfg.seed)
        value, key = s.value.cpu().numpy(), s.key.cpu().numpy()
        rows: list[tuple[int, int, int, int]] = []  # (feature, slot, quantile, rank)
        for f in np.flatnonzero((key > -np.inf).any(axis=0)):
            slots = np.flatnonzero(key[:, f] > -np.inf)
            slots = slots[np.argsort(value[slots, f], kind="stable")]
            for q, members in enumerate(np.array_split(slots, min(cfg.n_quantiles, len(slots)))):
                chosen = rng.choice(members, size=min(cfg.per_quantile, len(members)), replace=False)
                rows.extend((f, slot, q, r) for r, slot in enumerate(sorted(chosen, key=lambda x: -value[x, f])))
        f, slot, q, r = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True)) if rows \
            else (np.zeros(0, dtype=np.int64),) * 4
        return _rows(f, r, q, value[slot, f], s.doc.cpu().numpy()[slot, f], s.pos.cpu().numpy()[slot, f],
                     s.acts.cpu().numpy()[slot, f], s.tokens.cpu().numpy()[slot, f], "quantile")

    def _random_rows(self) -> pl.DataFrame:
        n = int((self.random_key > float("-inf")).sum())
        acts = self.random_acts[:n].cpu().numpy()  # [n, width, d_sae]
        w, f = np.meshgrid(np.arange(n), np.arange(self.d_sae), indexing="ij")
        w, f = w.reshape(-1), f.reshape(-1)
        return _rows(f, w, np.full(w.shape, -1), acts.max(axis=1).reshape(-1),
                     self.random_doc[:n].cpu().numpy()[w], self.random_pos[:n].cpu().numpy()[w],
                     acts.transpose(0, 2, 1).reshape(-1, self.width), self.random_tokens[:n].cpu().numpy()[w], "random")


EXAMPLE_COLUMNS = ["feature", "kind", "rank", "quantile", "activation", "doc_index", "token_position",
                   "window_start", "token_ids", "tokens", "token_activations"]


def _rows(feature, rank, quantile, activation, doc, pos, acts, tokens, kind: str) -> pl.DataFrame:
    """Rows of one kind; windows are trimmed to the positions inside the document."""
    tokens = np.asarray(tokens, dtype=np.int32)
    acts = np.asarray(acts, dtype=np.float32).reshape(tokens.shape)
    inside = tokens != WINDOW_PAD
    first = np.where(inside.any(axis=1), inside.argmax(axis=1), 0)
    radius = (tokens.shape[1] - 1) // 2
    frame = pl.DataFrame({
        "feature": pl.Series(np.asarray(feature), dtype=pl.Int32),
        "kind": pl.Series([kind] * len(feature), dtype=pl.String),
        "rank": pl.Series(np.asarray(rank), dtype=pl.Int32),
        "quantile": pl.Series(np.asarray(quantile), dtype=pl.Int32),
        "activation": pl.Series(np.asarray(activation), dtype=pl.Float32),
        "doc_index": pl.Series(np.asarray(doc), dtype=pl.Int64),
        "token_position": pl.Series(np.asarray(pos), dtype=pl.Int32),
        "window_start": pl.Series(np.asarray(pos) - radius + first, dtype=pl.Int32),
        "token_ids": pl.Series(tokens, dtype=pl.Array(pl.Int32, tokens.shape[1])).cast(pl.List(pl.Int32)),
        "token_activations": pl.Series(acts, dtype=pl.Array(pl.Float32, tokens.shape[1])).cast(pl.List(pl.Float32)),
        "first": pl.Series(first, dtype=pl.Int32),
        "n_inside": pl.Series(inside.sum(axis=1), dtype=pl.Int32),
    })
    return frame.with_columns(
        pl.col("token_ids").list.slice(pl.col("first"), pl.col("n_inside")),
        pl.col("token_activations").list.slice(pl.col("first"), pl.col("n_inside")),
        pl.when(pl.col("quantile") >= 0).then(pl.col("quantile")).alias("quantile"),
    ).drop("first", "n_inside")
