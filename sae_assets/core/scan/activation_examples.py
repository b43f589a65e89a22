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
    """Seeds the reservoir, quantile and random-window draws."""


Window = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class _Buffer:
    """Per-feature best-``size`` entries by ``key``: value, doc, position and the window around it.

    Entries are replaced in place: only the candidates that enter have their windows gathered, so after
    the first batches (when few documents beat the current top-k) a merge costs little.
    """

    def __init__(self, size: int, d_sae: int, width: int, device: torch.device) -> None:
        self.key = torch.full((size, d_sae), float("-inf"), device=device)
        self.value = torch.zeros((size, d_sae), device=device)
        self.doc = torch.full((size, d_sae), -1, dtype=torch.int64, device=device)
        self.pos = torch.zeros((size, d_sae), dtype=torch.int64, device=device)
        self.acts = torch.zeros((size, d_sae, width), device=device)
        self.tokens = torch.full((size, d_sae, width), WINDOW_PAD, dtype=torch.int32, device=device)

    def merge(self, key: torch.Tensor, value: torch.Tensor, doc: torch.Tensor, pos: torch.Tensor,
              window: Window) -> None:
        """Candidates ``[b, d_sae]`` (``key = -inf`` never enters); ``window(rows, features)`` gives the
        ``[n, width]`` activations and tokens of the entering (batch row, feature) pairs."""
        size, n_rows = self.key.shape[0], key.shape[0]
        # Only features with a candidate above their current minimum can change; after the first batches
        # that is a small subset, and the merge below runs on those columns alone.
        cols = (key > self.key.amin(dim=0)).any(dim=0).nonzero().squeeze(1)
        if cols.numel() == 0:
            return
        top_key, top = torch.cat([self.key[:, cols], key[:, cols]]).topk(size, dim=0)  # [size, n_cols]
        from_batch = (top >= size) & (top_key > float("-inf"))
        kept = torch.zeros_like(top, dtype=torch.int32).scatter_add_(
            0, top.clamp(max=size - 1), (top < size).to(torch.int32)) > 0
        free_slots = torch.sort((~kept).to(torch.int8), dim=0, descending=True, stable=True).indices
        new_rows = torch.where(from_batch, top - size, n_rows).sort(dim=0).values  # entering rows first
        j, col = (new_rows < n_rows).nonzero(as_tuple=True)
        slot, row, feature = free_slots[j, col], new_rows[j, col], cols[col]
        # Entries land in distinct (slot, feature) places, so their order is free: document by document, the
        # windows' reads from the batch stay in cache (half the time of a gather in slot order).
        order = (row * key.shape[1] + feature).argsort()
        slot, row, feature = slot[order], row[order], feature[order]
        self.key[slot, feature] = key[row, feature]
        self.value[slot, feature] = value[row, feature]
        self.doc[slot, feature] = doc[row, feature]
        self.pos[slot, feature] = pos[row, feature]
        self.acts[slot, feature], self.tokens[slot, feature] = window(row, feature)


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

    def _positions(self, center: torch.Tensor, length: torch.Tensor, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions ``[n, width]`` around ``center [n]`` (clamped into the batch) and whether each lies
        inside its document of ``length [n]`` (BOS excluded)."""
        positions = center.unsqueeze(-1) + self.offsets
        inside = (positions >= 1) & (positions < length.unsqueeze(-1))
        return positions.clamp(0, seq - 1), inside

    def add(self, doc_index: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
            feats: torch.Tensor, peak: torch.Tensor, pos: torch.Tensor) -> None:
        """``doc_index [b]``, ``tokens [b, seq]``, ``lengths [b]``, ``feats [b, seq, d_sae]`` (BOS and padding
        zeroed), and each document's ``peak [b, d_sae]`` and its position ``pos [b, d_sae]``."""
        b, seq, d_sae = feats.shape
        tokens = tokens.to(self.device, torch.int32)

        def window(row: torch.Tensor, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            positions, inside = self._positions(pos[row, feature], lengths[row], seq)
            acts = feats[row.unsqueeze(-1), positions, feature.unsqueeze(-1)].masked_fill(~inside, 0.0)
            return acts, tokens[row.unsqueeze(-1), positions].masked_fill(~inside, WINDOW_PAD)

        fired = peak > 0
        docs = doc_index.to(self.device).view(-1, 1).expand(-1, d_sae)
        self.top.merge(torch.where(fired, peak, float("-inf")), peak, docs, pos, window)
        priority = torch.rand((b, d_sae), generator=self.generator, device=self.device)
        self.sample.merge(torch.where(fired, priority, float("-inf")), peak, docs, pos, window)
        self._add_random(doc_index.to(self.device), tokens, lengths, feats)

    def _add_random(self, doc_index: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                    feats: torch.Tensor) -> None:
        """One uniformly drawn token per document, kept by weighted reservoir sampling (A-Res, weight =
        the document's length), so every token of the corpus is equally likely to be a random center."""
        b, seq, _ = feats.shape
        n_valid = (lengths - 1).clamp(min=0)
        u = torch.rand((b,), generator=self.generator, device=self.device)
        center = 1 + (torch.rand((b,), generator=self.generator, device=self.device) * n_valid).long()
        center = torch.minimum(center, (lengths - 1).clamp(min=1))
        key = torch.where(n_valid > 0, u.log() / n_valid.clamp(min=1).float(), float("-inf"))
        n_old = self.random_key.shape[0]
        top_key, keep = torch.cat([self.random_key, key]).topk(n_old)
        old, new = keep[keep < n_old], keep[keep >= n_old] - n_old
        positions, inside = self._positions(center[new], lengths[new], seq)  # [n_new, width]
        acts = feats[new.unsqueeze(-1), positions].masked_fill(~inside.unsqueeze(-1), 0.0)  # [n_new, width, d]
        self.random_key = torch.cat([self.random_key[old], key[new]])
        self.random_doc = torch.cat([self.random_doc[old], doc_index[new]])
        self.random_pos = torch.cat([self.random_pos[old], center[new]])
        self.random_acts = torch.cat([self.random_acts[old], acts])
        self.random_tokens = torch.cat([self.random_tokens[old],
                                        tokens[new.unsqueeze(-1), positions].masked_fill(~inside, WINDOW_PAD)])
