"""The feature page's data (``FeatureReader.page``) on a synthetic 16,384-feature partition: cold and warm times.

Writes every table the page reads into a temporary lake with the storage functions the assets use, at realistic
sizes and in the writers' row order: activation_examples ~50 rows per feature (20 top, 10 quantile bins x 2,
10 random; 33-token windows; grouped by feature as ``examples_frame`` writes them), cooccurrence a few
hundred partners per feature (record batches of 128 rows), explanation embeddings 16,384 x 384, 25 decoder edges
per feature, logit effects (batches of 4,096), labels, explanations, stats, scores, clusters, a few prompts.
Then times ``page()`` cold (a fresh reader: caches empty; the OS page cache holds the files just written) and
warm (p50/p95 over random features), with the mean time per section, against the 300 ms target.

    .venv/bin/python benchmarks/feature_page.py                     # 16,384 features, 50 warm pages
    .venv/bin/python benchmarks/feature_page.py --features 4096 --pages 20 --keep /tmp/lake
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from sae_assets.core.sae.logit_effects import LOGIT_EFFECTS_SCHEMA
from sae_assets.core.scan.cooccurrence import COOCCURRENCE_SCHEMA
from sae_assets.storage.delta import table_uri, write_partition, write_partition_batches
from sae_assets.viewer.feature_data import FeatureReader

MODEL, LAYER = "gemma-2-2b@gemmascope-res-16k", 12
TARGET_MS = 300.0
WIDTH, VOCAB, DIM = 33, 49_152, 384


def _vocabulary() -> pl.Series:
    return pl.Series([f"tok{i}" if i % 7 else f" word{i}" for i in range(VOCAB)], dtype=pl.String)


def _example_rows(rng: np.random.Generator, vocab: pl.Series, feature: np.ndarray, rank: np.ndarray,
                  quantile: np.ndarray | None, kind: str, active: float) -> pl.DataFrame:
    m = len(feature)
    ids = (rng.zipf(1.2, size=(m, WIDTH)) % VOCAB).astype(np.int32)
    acts = np.where(rng.random((m, WIDTH)) < active, rng.gamma(2.0, 1.0, (m, WIDTH)), 0.0).astype(np.float32)
    if kind != "random":
        acts[:, WIDTH // 2] = rng.gamma(4.0, 2.0, m)  # the peak
    position = rng.integers(WIDTH, 1000, m).astype(np.int32)
    return pl.DataFrame({
        "feature": pl.Series(feature, dtype=pl.Int32), "kind": [kind] * m, "rank": pl.Series(rank, dtype=pl.Int32),
        "quantile": pl.Series(quantile if quantile is not None else [None] * m, dtype=pl.Int32),
        "activation": pl.Series(acts.max(axis=1), dtype=pl.Float32),
        "doc_index": pl.Series(rng.integers(0, 20_000, m), dtype=pl.Int64),
        "token_position": pl.Series(position, dtype=pl.Int32),
        "window_start": pl.Series(position - WIDTH // 2, dtype=pl.Int32),
        "token_ids": pl.Series(ids, dtype=pl.Array(pl.Int32, WIDTH)).cast(pl.List(pl.Int32)),
        "tokens": vocab.gather(pl.Series(ids.reshape(-1))).reshape((m, WIDTH)).cast(pl.List(pl.String)),
        "token_activations": pl.Series(acts, dtype=pl.Array(pl.Float32, WIDTH)).cast(pl.List(pl.Float32)),
    })


def examples(n: int, rng: np.random.Generator) -> pl.DataFrame:
    """20 top, 10 quantile bins x 2, 10 random rows per feature, in ``examples_frame``'s order (by feature)."""
    vocab = _vocabulary()
    rank, feature = np.meshgrid(np.arange(20), np.arange(n), indexing="ij")  # rank-major, as _top_rows
    top = _example_rows(rng, vocab, feature.ravel(), rank.ravel(), None, "top", 0.3)
    feature = np.repeat(np.arange(n), 20)  # feature-major, as _quantile_rows
    quantile = _example_rows(rng, vocab, feature, np.tile([0, 1], 10 * n), np.tile(np.repeat(np.arange(10), 2), n),
                             "quantile", 0.2)
    rank, feature = np.meshgrid(np.arange(10), np.arange(n), indexing="ij")  # window-major, as _random_rows
    random = _example_rows(rng, vocab, feature.ravel(), rank.ravel(), None, "random", 0.02)
    return pl.concat([top, quantile, random]).sort("feature", maintain_order=True)  # grouped by feature, as written


def cooccurrence_batches(n: int, seed: int, partners: int = 300) -> Callable[[], Iterator[pa.RecordBatch]]:
    def batches() -> Iterator[pa.RecordBatch]:
        rng = np.random.default_rng(seed)
        n_windows = 4096
        marginal = rng.integers(1, 400, n)
        for start in range(0, n, 128):
            rows = range(start, min(start + 128, n))
            chosen = [np.sort(rng.choice(n, partners, replace=False)) for _ in rows]
            chosen = [c[c != f] for c, f in zip(chosen, rows, strict=True)]
            counts = [rng.integers(1, np.minimum(marginal[f], marginal[c]) + 1) for f, c in zip(rows, chosen,
                                                                                                strict=True)]
            yield pa.RecordBatch.from_arrays([
                pa.array(list(rows), pa.int32()), pa.array(marginal[start:start + len(rows)], pa.int32()),
                pa.array([c.tolist() for c in chosen], pa.list_(pa.int32())),
                pa.array([c.tolist() for c in counts], pa.list_(pa.int32())),
                pa.array([n_windows] * len(rows), pa.int64())], schema=COOCCURRENCE_SCHEMA)
    return batches


def logit_batches(n: int, seed: int) -> Callable[[], Iterator[pa.RecordBatch]]:
    def batches() -> Iterator[pa.RecordBatch]:
        rng = np.random.default_rng(seed)
        for start in range(0, n, 4096):
            m = min(4096, n - start)
            ids = [rng.integers(0, VOCAB, (m, 10)).astype(np.int32) for _ in range(2)]
            values = [-np.sort(-rng.normal(size=(m, 10))), np.sort(rng.normal(size=(m, 10)))]
            columns: list[Any] = [pa.array(np.arange(start, start + m), pa.int32())]
            for i, v in zip(ids, values, strict=True):
                columns += [pa.array(i.tolist(), pa.list_(pa.int32())),
                            pa.array([[f"tok{t}" for t in row] for row in i], pa.list_(pa.string())),
                            pa.array(v.astype(np.float32).tolist(), pa.list_(pa.float32()))]
            yield pa.RecordBatch.from_arrays(columns, schema=LOGIT_EFFECTS_SCHEMA)
    return batches


def write_lake(root: str, n: int, seed: int = 0) -> dict[str, float]:
    """Every table the page reads, for MODEL layer LAYER; seconds per table written."""
    rng = np.random.default_rng(seed)
    ids = pl.Series(np.arange(n), dtype=pl.Int32)
    words = np.array(["river", "code", "legal", "music", "city", "number", "name", "date", "html", "sport"])
    text = [f"{words[i % 10]} {words[(i // 10) % 10]} feature {i}" for i in range(n)]
    embeddings = rng.normal(size=(n, DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    neighbours = np.stack([np.sort(rng.choice(n, 25, replace=False)) for _ in range(n)])
    frames: dict[str, Callable[[], pl.DataFrame]] = {
        "sae_decoder": lambda: pl.DataFrame({"feature": ids, "decoder_norm": np.ones(n, np.float32)}),
        "feature_stats": lambda: pl.DataFrame({
            "feature": ids, "n_tokens_active": rng.integers(0, 5000, n), "density": rng.uniform(0, 0.01, n),
            "mean_activation": rng.gamma(2, 1, n).astype(np.float32), "max_activation": rng.gamma(4, 2, n),
            "activation_entropy": rng.uniform(0, 8, n), "n_docs_active": rng.integers(0, 2000, n)}),
        "feature_labels": lambda: pl.DataFrame({
            "feature": ids, "label": text, "label_source": ["keywords"] * n, "label_llm": [None] * n,
            "label_keywords": text, "score": rng.uniform(0.4, 1, n), "score_keywords": rng.uniform(0.4, 1, n),
            "error": [None] * n}, schema_overrides={"label_llm": pl.String, "error": pl.String}),
        "explanations": lambda: pl.DataFrame({
            "feature": ids.cast(pl.Int64), "description": [t.upper() for t in text],
            "explanation_type": ["oai_token-act-pair"] * n, "explainer_model": ["gpt-4o-mini"] * n,
            "source": ["neuronpedia"] * n, "n_alternatives": pl.Series([0] * n, dtype=pl.Int32)}),
        "activation_examples": lambda: examples(n, rng),
        "feature_map_edges": lambda: pl.DataFrame({
            "source": pl.Series(np.repeat(np.arange(n), 25), dtype=pl.Int32),
            "target": pl.Series(neighbours.ravel(), dtype=pl.Int32),
            "similarity": pl.Series(rng.uniform(0.25, 0.9, n * 25), dtype=pl.Float32)}),
        "explanation_embeddings": lambda: pl.DataFrame({
            "feature": ids, "embedding_model": ["all-MiniLM-L6-v2"] * n,
            "embedding": pl.Series(embeddings, dtype=pl.Array(pl.Float32, DIM)).cast(pl.List(pl.Float32))}),
        "alignment_scores": lambda: pl.DataFrame({
            "feature": ids, "embedding_model": ["all-MiniLM-L6-v2"] * n, "ndcg": rng.uniform(0, 1, n),
            "has_explanation": [True] * n}),
        "feature_clusters": lambda: pl.DataFrame({
            "feature": ids, "kept": rng.random(n) < 0.7, "cluster": pl.Series(rng.integers(-1, 40, n), dtype=pl.Int32),
            "x": rng.normal(size=n).astype(np.float32), "y": rng.normal(size=n).astype(np.float32),
            "selected": rng.random(n) < 0.01}),
        "optimized_prompts": lambda: pl.DataFrame({
            "feature": pl.Series(np.repeat(np.arange(8), 2), dtype=pl.Int32), "method": ["discrete", "continuous"] * 8,
            "tokens": [["<bos>", " the", " river"]] * 16, "text": ["<bos> the river"] * 16,
            "activation": rng.uniform(1, 10, 16), "dataset_max_activation": [10.0] * 16,
            "ratio": rng.uniform(0.1, 1, 16), "cross_entropy": rng.uniform(2, 9, 16)}),
    }
    seconds = {}
    for table, build in frames.items():
        start = time.perf_counter()
        write_partition(build(), table_uri(root, table), MODEL, LAYER)
        seconds[table] = time.perf_counter() - start
    for table, schema, batches in (("cooccurrence", COOCCURRENCE_SCHEMA, cooccurrence_batches(n, seed)),
                                   ("logit_effects", LOGIT_EFFECTS_SCHEMA, logit_batches(n, seed))):
        start = time.perf_counter()
        write_partition_batches(batches, schema, table_uri(root, table), MODEL, LAYER)
        seconds[table] = time.perf_counter() - start
    return seconds


def timed_sections(reader: FeatureReader) -> dict[str, list[float]]:
    """Wrap the reader's section builder to record milliseconds per section."""
    times: dict[str, list[float]] = {}
    guarded = reader._guarded

    def timing(name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            return guarded(name, build)
        finally:
            times.setdefault(name, []).append(1000 * (time.perf_counter() - start))

    reader._guarded = timing  # type: ignore[method-assign]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=16_384)
    parser.add_argument("--pages", type=int, default=50, help="warm pages (random features)")
    parser.add_argument("--keep", help="write the lake here (kept) instead of a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or tmp
        start = time.perf_counter()
        written = write_lake(root, args.features)
        print(f"wrote {len(written)} tables for {args.features:,} features in {time.perf_counter() - start:.0f} s "
              f"(activation_examples {written['activation_examples']:.0f} s)")
        reader = FeatureReader(root)
        sections = timed_sections(reader)
        rng = np.random.default_rng(1)
        start = time.perf_counter()
        page = reader.page(MODEL, LAYER, 3)  # a feature with optimized prompts: every section has data
        cold = 1000 * (time.perf_counter() - start)
        statuses = {name: section["status"] for name, section in page["sections"].items()}
        assert set(statuses.values()) == {"ok"}, statuses
        cold_sections = {name: t[0] for name, t in sections.items()}
        sections.clear()
        warm = []
        for feature in rng.integers(args.features, size=args.pages):
            start = time.perf_counter()
            reader.page(MODEL, LAYER, int(feature))
            warm.append(1000 * (time.perf_counter() - start))
        other = statistics.fmean(warm) - sum(statistics.fmean(t) for t in sections.values())
        p50, p95 = float(np.percentile(warm, 50)), float(np.percentile(warm, 95))
        print(f"\n| page() at {args.features:,} features | ms | target {TARGET_MS:.0f} ms |\n|---|---|---|")
        for label, value in (("cold (first page, caches empty)", cold), (f"warm p50 ({args.pages} pages)", p50),
                             (f"warm p95 ({args.pages} pages)", p95), ("warm max", max(warm))):
            print(f"| {label} | {value:.0f} | {'ok' if value <= TARGET_MS else 'over'} |")
        print("\n| section | cold ms | warm mean ms |\n|---|---|---|")
        for name in cold_sections:
            print(f"| {name} | {cold_sections[name]:.1f} | {statistics.fmean(sections[name]):.1f} |")
        print(f"| (tables' versions, labels, feature count) | {cold - sum(cold_sections.values()):.1f} | {other:.1f} |")


if __name__ == "__main__":
    main()
