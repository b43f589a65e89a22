"""The ``activation_examples`` table, built from an :class:`ExampleCollector`'s buffers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from sae_assets.core.scan.activation_examples import WINDOW_PAD, ExampleCollector

EXAMPLE_COLUMNS = ["feature", "kind", "rank", "quantile", "activation", "doc_index", "token_position",
                   "window_start", "token_ids", "tokens", "token_activations"]


def examples_frame(collector: ExampleCollector, token_strings: Callable[[list[int]], list[str]]) -> pl.DataFrame:
    """All examples as rows, grouped by feature (top, quantile, random within a feature), so a reader of one
    feature's rows (the viewer's feature page) touches few pages of the table; ``token_strings`` maps token ids
    to display strings."""
    frame = pl.concat([_top_rows(collector), _quantile_rows(collector), _random_rows(collector)], how="vertical")
    frame = frame.sort("feature", maintain_order=True)  # before the strings exist: fewer bytes to move
    ids = frame["token_ids"].list.explode().drop_nulls().unique().sort()
    words = pl.Series(token_strings(ids.to_list()), dtype=pl.String)
    tokens = frame["token_ids"].list.eval(pl.element().replace_strict(ids, words, return_dtype=pl.String))
    return frame.with_columns(tokens.alias("tokens")).select(EXAMPLE_COLUMNS)


def _top_rows(c: ExampleCollector) -> pl.DataFrame:
    t = c.top
    key = t.key.cpu().numpy()
    slot = np.argsort(-key, axis=0, kind="stable")  # [top_k, d_sae]: rank -> slot, largest first
    rank, feature = np.meshgrid(np.arange(key.shape[0]), np.arange(c.d_sae), indexing="ij")
    keep = np.take_along_axis(key, slot, axis=0) > -np.inf
    slot, rank, feature = slot[keep], rank[keep], feature[keep]
    return _rows(feature, rank, np.full(len(feature), -1), t.value.cpu().numpy()[slot, feature],
                 t.doc.cpu().numpy()[slot, feature], t.pos.cpu().numpy()[slot, feature],
                 t.acts.cpu().numpy()[slot, feature], t.tokens.cpu().numpy()[slot, feature], "top")


def _quantile_rows(c: ExampleCollector) -> pl.DataFrame:
    """Per feature: sort the reservoir by activation, cut it into equal-count bins, draw from each bin."""
    s, cfg = c.sample, c.cfg
    value, key = s.value.cpu().numpy(), s.key.cpu().numpy()  # [reservoir, d_sae]
    size, d_sae = key.shape
    filled = key > -np.inf
    n = filled.sum(axis=0)  # samples per feature
    by_value = np.argsort(np.where(filled, value, np.inf), axis=0, kind="stable")  # filled slots first, ascending
    order = np.arange(size)[:, None]  # position in the sorted reservoir
    n_bins = np.minimum(cfg.n_quantiles, n)
    bins = (order * n_bins[None, :]) // np.maximum(n, 1)[None, :]  # equal-count bins of sorted positions
    draw = np.random.default_rng(cfg.seed).random((size, d_sae))
    feature = np.broadcast_to(np.arange(d_sae), (size, d_sae))
    valid = order < n[None, :]
    f, q, pos_sorted, u = feature[valid], bins[valid], np.broadcast_to(order, (size, d_sae))[valid], draw[valid]
    pick = np.lexsort((u, q, f))  # group by (feature, bin), random order within
    f, q, pos_sorted = f[pick], q[pick], pos_sorted[pick]
    group_start = np.r_[0, np.flatnonzero((np.diff(f) != 0) | (np.diff(q) != 0)) + 1]
    within = np.arange(len(f)) - np.repeat(group_start, np.diff(np.r_[group_start, len(f)]))
    chosen = within < cfg.per_quantile
    f, q, slot = f[chosen], q[chosen], by_value[pos_sorted[chosen], f[chosen]]
    act = value[slot, f]
    final = np.lexsort((-act, q, f))  # by feature, bin, then strongest first
    f, q, slot, act = f[final], q[final], slot[final], act[final]
    starts = np.r_[0, np.flatnonzero((np.diff(f) != 0) | (np.diff(q) != 0)) + 1]
    rank = np.arange(len(f)) - np.repeat(starts, np.diff(np.r_[starts, len(f)]))
    return _rows(f, rank, q, act, s.doc.cpu().numpy()[slot, f], s.pos.cpu().numpy()[slot, f],
                 s.acts.cpu().numpy()[slot, f], s.tokens.cpu().numpy()[slot, f], "quantile")


def _random_rows(c: ExampleCollector) -> pl.DataFrame:
    drawn = (c.random_key > float("-inf")).cpu().numpy()
    acts = c.random_acts.cpu().numpy()[drawn]  # [n, width, d_sae]
    grid_w, grid_f = np.meshgrid(np.arange(acts.shape[0]), np.arange(c.d_sae), indexing="ij")
    w, f = grid_w.reshape(-1), grid_f.reshape(-1)
    return _rows(f, w, np.full(w.shape, -1), acts.max(axis=1).reshape(-1),
                 c.random_doc.cpu().numpy()[drawn][w], c.random_pos.cpu().numpy()[drawn][w],
                 acts.transpose(0, 2, 1).reshape(-1, c.width), c.random_tokens.cpu().numpy()[drawn][w], "random")


def _rows(feature: np.ndarray, rank: np.ndarray, quantile: np.ndarray, activation: np.ndarray, doc: np.ndarray,
          pos: np.ndarray, acts: np.ndarray, tokens: np.ndarray, kind: str) -> pl.DataFrame:
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
