"""SFAL throughput: Neuronpedia export ingestion, explanation embeddings, and alignment scoring.

    .venv/bin/python benchmarks/sfal.py                                   # CPU, 16,384 features
    .venv/bin/python benchmarks/sfal.py --device cuda --models all-MiniLM-L6-v2 Lajavaness/bilingual-embedding-large

Rows, each measured in this run:
  ingestion: the ``explanations`` asset's path (S3 listing, streamed gzip batches, normalization, one
             explanation per feature) against a Neuronpedia-shaped server on 127.0.0.1; goal <= 5 s for 16,384
             features (with ``--duplicates`` extra explanations per feature, as real exports have).
  embeddings: explanations per second for each sentence-transformers model.
  scoring:   ``sfal_ndcg`` (blocked, torch) for every feature, against (1) the same scorer as it was when issue 17
             was filed (its scoring loop, Phi rows and partial sort: ``filed_ndcg_by_rows``, ``filed_phi_rows``,
             ``filed_top_order``), run in full
             here and required to give bit-for-bit the same NDCG, and (2) a per-feature numpy loop as SFAL's
             reference code does it (argsort per row), timed on ``--baseline-features`` rows and scaled.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sae_assets.core.alignment.explanations import choose_explanations, normalize  # noqa: E402
from sae_assets.core.alignment.sfal import phi_from_counts, sfal_ndcg  # noqa: E402
from sae_assets.core.common.similarity import unit_rows  # noqa: E402
from sae_assets.resources.neuronpedia import NeuronpediaResource  # noqa: E402
from tests.neuronpedia_server import NeuronpediaServer  # noqa: E402

WORDS = ("token", "number", "city", "verb", "plural", "date", "code", "quote", "name", "science", "music", "sport")


def _description(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))


def ingestion(features: int, batch_size: int, duplicates: int, rng: np.random.Generator) -> tuple[float, int, int]:
    prefix = "v1/bench-model/12-bench-res/explanations/"
    batches = {}
    for n, start in enumerate(range(0, features, batch_size)):
        batches[f"{prefix}batch-{n}.jsonl.gz"] = [
            {"modelId": "bench-model", "layer": "12-bench-res", "index": str(i), "description": _description(rng),
             "typeName": "oai_token-act-pair", "explanationModelName": f"model-{c}", "authorId": "bench",
             "createdAt": f"2024-0{1 + c}-01T00:00:00Z"}
            for i in range(start, min(start + batch_size, features)) for c in range(1 + duplicates)]
    with NeuronpediaServer(batches, page_size=1000) as server:
        client = NeuronpediaResource(s3_url=server.url, api_url=server.url).client()
        start = time.perf_counter()
        records = [normalize(r, f"{key} line {line}") for key in client.list_explanation_batches("bench-model",
                                                                                                 "12-bench-res")
                   for line, r in client.iter_batch(key)]
        frame = choose_explanations(records, "neuronpedia", ["oai_token-act-pair"])
        return time.perf_counter() - start, len(records), frame.height


def embeddings(models: list[str], n: int, device: str, rng: np.random.Generator) -> list[tuple[str, float, int]]:
    from sae_assets.resources.embedder import load_embedder

    texts = [_description(rng) for _ in range(n)]
    rows = []
    for name in models:
        model = load_embedder(name, device)
        model.encode(texts[:64], batch_size=64, normalize_embeddings=True)  # warm-up
        start = time.perf_counter()
        vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        rows.append((name, n / (time.perf_counter() - start), vectors.shape[1]))
    return rows


def synthetic_scan(d: int, windows: int, dim: int, device: torch.device, rng: np.random.Generator):
    """Co-occurrence counts of ``d`` features over ``windows`` windows (densities log-uniform in 1e-4..0.2,
    as SAE features are), int32 like the ``alignment_scores`` asset's (``dense_counts``), and explanation embeddings
    with 10% of features unexplained (zero rows)."""
    density = torch.from_numpy(np.exp(rng.uniform(np.log(1e-4), np.log(0.2), d))).float()
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros((d, d), dtype=torch.int32)
    for start in range(0, windows, 1024):
        p = (torch.rand((min(1024, windows - start), d), generator=gen) < density).float()
        counts += (p.T @ p).round().int()
    vectors = torch.from_numpy(rng.standard_normal((d, dim)))
    vectors[rng.random(d) < 0.1] = 0
    return counts.to(device), vectors.to(device)


def filed_top_order(scores: torch.Tensor, k: int, slack: int | None = None) -> torch.Tensor:
    """``top_order`` as it was when issue 17 was filed: the k-th value from an unsorted topk, then masks over the
    whole row for the entries above and tied with it, then a stable sort of those k."""
    kth = scores.topk(k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    above, tied = scores > kth, scores == kth
    room = k - above.sum(dim=1, keepdim=True)
    cols = (above | (tied & (tied.cumsum(dim=1) <= room))).nonzero()[:, 1].view(scores.shape[0], k)
    return cols.gather(1, torch.sort(scores.gather(1, cols), dim=1, descending=True, stable=True).indices)


def filed_phi_rows(counts: torch.Tensor, n_windows: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``phi_from_counts`` as it was when issue 17 was filed: five passes over the block, one an outer product."""
    marg = counts.diagonal().to(torch.float64)
    n = float(n_windows)
    spread = marg * (n - marg)
    inv_sd = torch.where(spread > 0, spread.clamp_min(1e-300).rsqrt(), torch.zeros((), dtype=torch.float64))
    rows = torch.arange(counts.shape[0]) if rows is None else rows
    phi = counts.index_select(0, rows).to(torch.float64).mul_(n)
    phi.sub_(marg[rows].unsqueeze(1) * marg.unsqueeze(0))
    return phi.mul_(inv_sd[rows].unsqueeze(1)).mul_(inv_sd.unsqueeze(0))


def filed_ndcg_by_rows(phi_rows, semantic_rows, d: int, device, top_n: int, block: int,
                       report=None) -> torch.Tensor:
    """``ndcg_by_rows`` as it was when issue 17 was filed: every row ranked, a relevance matrix per block."""
    top_n = min(top_n, d - 1)
    ranks = torch.arange(top_n, device=device, dtype=torch.float64)
    gain_by_rank = 1.1 ** (top_n - ranks) - 1
    discount = 1 / torch.log2(ranks + 2)
    ideal = (gain_by_rank * discount).sum()
    out = torch.empty(d, dtype=torch.float64, device=device)
    for start in range(0, d, block):
        rows = torch.arange(start, min(start + block, d), device=device)
        b = rows.shape[0]
        diagonal = (torch.arange(b, device=device), rows)
        p = phi_rows(rows).to(torch.float64)
        s = semantic_rows(rows).to(torch.float64)
        p[diagonal] = -torch.inf
        s[diagonal] = -torch.inf
        relevance = torch.zeros((b, d), dtype=torch.float64, device=device)
        relevance.scatter_(1, filed_top_order(s, top_n), gain_by_rank.expand(b, -1).contiguous())
        dcg = (relevance.gather(1, filed_top_order(p, top_n)) * discount).sum(1)
        out[rows] = dcg / ideal
    return out


def as_filed(counts: torch.Tensor, n_windows: int, vectors: torch.Tensor, top_n: int, block: int) -> torch.Tensor:
    """``sfal_ndcg`` with the scoring loop, ranking and Phi code it had when issue 17 was filed (CPU): a new
    Phi and cosine block per block."""
    unit = unit_rows(vectors.to(torch.float64))
    return filed_ndcg_by_rows(lambda rows: filed_phi_rows(counts, n_windows, rows), lambda rows: unit[rows] @ unit.T,
                              counts.shape[0], counts.device, top_n=top_n, block=block)


def baseline_ndcg(phi: np.ndarray, sem: np.ndarray, rows: range, top_n: int) -> list[float]:
    """SFAL's reference shape: one feature at a time, two argsorts over all other features."""
    d = phi.shape[1]
    discount = 1 / np.log2(np.arange(top_n) + 2)
    ideal = ((1.1 ** (top_n - np.arange(top_n)) - 1) * discount).sum()
    out = []
    for i in rows:
        others = np.delete(np.arange(d), i)
        by_sem = others[np.argsort(-sem[i - rows.start, others], kind="stable")]
        by_phi = others[np.argsort(-phi[i - rows.start, others], kind="stable")]
        rel = np.zeros(d)
        rel[by_sem] = np.maximum(0, 1.1 ** (top_n - np.arange(d - 1)) - 1)
        out.append(float((rel[by_phi[:top_n]] * discount).sum() / ideal))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=16384)
    parser.add_argument("--batch-size", type=int, default=1024, help="features per export batch")
    parser.add_argument("--duplicates", type=int, default=1, help="extra explanations per feature in the exports")
    parser.add_argument("--models", nargs="+", default=["all-MiniLM-L6-v2"])
    parser.add_argument("--embed-texts", type=int, default=4096)
    parser.add_argument("--windows", type=int, default=4096, help="co-occurrence windows of the synthetic scan")
    parser.add_argument("--top-n", type=int, default=1023)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--baseline-features", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    seconds, n_records, n_features = ingestion(args.features, args.batch_size, args.duplicates, rng)
    print("\n| ingestion (loopback Neuronpedia) | records | features | seconds | features/s | goal |")
    print("|---|---|---|---|---|---|")
    print(f"| S3 listing + streamed gzip + dedup | {n_records:,} | {n_features:,} | {seconds:.2f} | "
          f"{n_features / seconds:,.0f} | <= 5 s: {'met' if seconds <= 5 else 'missed'} |")

    print("\n| embedding model | texts | dim | texts/s |")
    print("|---|---|---|---|")
    for name, rate, dim in embeddings(args.models, args.embed_texts, str(device), rng):
        print(f"| {name} | {args.embed_texts:,} | {dim} | {rate:,.0f} |")

    d = args.features
    counts, vectors = synthetic_scan(d, args.windows, 384, device, rng)
    start = time.perf_counter()
    ndcg = sfal_ndcg(counts, args.windows, vectors, top_n=args.top_n, block=args.block)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ours = time.perf_counter() - start
    filed = None
    if device.type == "cpu":
        start = time.perf_counter()
        filed_ndcg = as_filed(counts, args.windows, vectors, args.top_n, args.block)
        filed = time.perf_counter() - start
        same = torch.equal(filed_ndcg, ndcg)
    rows = range(0, min(args.baseline_features, d))
    idx = torch.arange(rows.start, rows.stop, device=device)
    phi_rows = phi_from_counts(counts, args.windows, idx).cpu().numpy()
    unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-300)
    sem_rows = (unit[idx] @ unit.T).cpu().numpy()
    start = time.perf_counter()
    reference = baseline_ndcg(phi_rows, sem_rows, rows, min(args.top_n, d - 1))
    base = (time.perf_counter() - start) * d / len(rows)
    agree = np.allclose(reference, ndcg[: len(rows)].cpu().numpy(), rtol=1e-9)
    print("\n| scoring | features | seconds | ratio vs baseline |")
    print("|---|---|---|---|")
    print(f"| sfal_ndcg (blocked torch, {device}) | {d:,} | {ours:.1f} | {base / ours:.1f}x |")
    if filed is not None:
        print(f"| sfal_ndcg as filed in issue 17 (same process) | {d:,} | {filed:.1f} | {base / filed:.1f}x |")
    print(f"| per-feature numpy loop (timed on {len(rows)}, scaled) | {d:,} | {base:.1f} | 1.0x |")
    print(f"\nmean NDCG {float(ndcg.mean()):.4f}; first {len(rows)} rows agree with the loop: {agree}; "
          f"finite: {bool(torch.isfinite(ndcg).all())}")
    if filed is not None:
        print(f"now / as filed: {filed / ours:.2f}x faster; NDCG bit-for-bit equal to the filed code: {same}")


if __name__ == "__main__":
    main()
