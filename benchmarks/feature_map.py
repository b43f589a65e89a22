"""feature_map: the seed's UMAP (own approximate k-NN) + an exact k-NN for edges, vs one exact k-NN used twice.

    .venv/bin/python benchmarks/feature_map.py                         # 16,384 x 2,304, as a Gemma Scope 16k SAE
    .venv/bin/python benchmarks/feature_map.py --n 4096 --dim 512      # smaller

A seeded decoder matrix with cluster structure (``--clusters`` directions of varied popularity plus noise) is
saved once; each variant then runs in a FRESH subprocess, so imports and numba compilation count:
  (a) the seed's method: umap-learn's defaults with metric cosine, n_components 3 (UMAP runs its own
      approximate neighbour search, pynndescent, from 4,096 points on; below, exact pairwise distances; no
      random_state, so numba runs on every core), plus a separate exact k-NN pass for the edges (the same
      blocked torch k-NN as (b): the comparison isolates what sharing the k-NN saves);
  (b) this asset's computation with its defaults: one exact blocked k-NN (k = max(k_edges, n_neighbors)),
      used for the edges and as UMAP's precomputed_knn; seeded (single-threaded numba), PCA init;
  (b') the same with umap-learn's default spectral init, to show what the init alone changes.
Trustworthiness
(sklearn, metric cosine, 5 neighbours) is measured on the same ``--sample`` points of both maps; (b)'s edges are
compared with a float64 brute-force reference on ``--edge-rows`` rows. "wall s" is the whole subprocess:
interpreter, imports, loading the matrix, k-NN, UMAP; "CPU s" its user + system time, which other jobs on
the machine do not inflate (an upper bound of the wall time the same process takes alone on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = ("a", "b", "b-spectral")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_decoder(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """``[n, dim]`` float32: each row a cluster direction (Zipf-like popularity) plus isotropic noise of the
    same norm (within-cluster cosine about 0.5), a few rows pure noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    popularity = 1.0 / np.arange(1, clusters + 1) ** 0.7
    labels = rng.choice(clusters, size=n, p=popularity / popularity.sum())
    x = centers[labels] + rng.normal(size=(n, dim)).astype(np.float32)
    x[rng.random(n) < 0.05] *= 0.0
    x += rng.normal(scale=0.05, size=(n, dim)).astype(np.float32)  # noise rows stay non-zero
    return x.astype(np.float32)


def child(variant: str, data: Path, out: Path) -> None:
    """One variant, timed inside a fresh process; writes coords/edges .npy and a JSON line of timings."""
    import torch

    from sae_assets.core.feature_map.knn import exact_knn
    from sae_assets.core.feature_map.layout import FeatureMapConfig, build_feature_map

    x = np.load(data)
    cfg = FeatureMapConfig(init="spectral" if variant == "b-spectral" else "pca")
    timings: dict[str, float] = {}
    if variant == "a":
        import umap

        start = time.perf_counter()
        coords = umap.UMAP(n_components=3, metric="cosine").fit_transform(x)
        timings["umap"] = time.perf_counter() - start
        start = time.perf_counter()
        indices, sims = exact_knn(torch.from_numpy(x), cfg.k_edges)
        timings["knn"] = time.perf_counter() - start
        indices, sims = indices.numpy(), sims.numpy()
    else:
        fmap = build_feature_map(torch.from_numpy(x), cfg)
        coords, indices, sims = fmap.coords, fmap.indices, fmap.sims
        timings.update(knn=fmap.knn_seconds, umap=fmap.umap_seconds)
    np.save(out / f"coords-{variant}.npy", np.asarray(coords, dtype=np.float32))
    np.save(out / f"indices-{variant}.npy", indices)
    np.save(out / f"sims-{variant}.npy", sims)
    print(json.dumps(timings))


def run_variant(variant: str, data: Path, out: Path) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", variant, "--data", str(data), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if proc.returncode != 0:
        sys.exit(f"variant ({variant}) failed:\n{proc.stderr[-4000:]}")
    timings = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall": wall, "cpu": cpu, **timings}


def edges_match(x: np.ndarray, indices: np.ndarray, sims: np.ndarray, rows: np.ndarray, k: int,
                threshold: float) -> int:
    """Rows whose edges (first k neighbours at or above threshold, in order) equal a float64 brute force."""
    from sae_assets.core.feature_map.layout import edges_frame

    unit = x.astype(np.float64) / np.maximum(np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True), 1e-300)
    ours = edges_frame(indices, sims, k, threshold)
    equal = 0
    for r in rows:
        s = unit[r] @ unit.T
        s[r] = -np.inf
        order = np.lexsort((np.arange(len(s)), -s))[:k]
        expected = [int(j) for j in order if s[j] >= threshold]
        got = ours.filter(ours["source"] == r)["target"].to_list()
        equal += expected == got
    return equal


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=16384)
    p.add_argument("--dim", type=int, default=2304)
    p.add_argument("--clusters", type=int, default=256)
    p.add_argument("--sample", type=int, default=2000, help="points for trustworthiness")
    p.add_argument("--edge-rows", type=int, default=200, help="rows checked against the brute-force reference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.data, args.out)
        return

    from sklearn.manifold import trustworthiness

    from sae_assets.core.feature_map.layout import FeatureMapConfig

    cfg = FeatureMapConfig()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        load = os.getloadavg()[0]
        x = make_decoder(args.n, args.dim, args.clusters, args.seed)
        np.save(out / "decoder.npy", x)
        results = {v: run_variant(v, out / "decoder.npy", out) for v in VARIANTS}
        rng = np.random.default_rng(args.seed + 1)
        sample = rng.choice(args.n, size=min(args.sample, args.n), replace=False)
        for v, r in results.items():
            coords = np.load(out / f"coords-{v}.npy")
            r["trust"] = trustworthiness(x[sample], coords[sample], n_neighbors=5, metric="cosine")
        rows = rng.choice(args.n, size=min(args.edge_rows, args.n), replace=False)
        equal = edges_match(x, np.load(out / "indices-b.npy"), np.load(out / "sims-b.npy"), rows, cfg.k_edges,
                            cfg.edge_threshold)

    a, b, b2 = results["a"], results["b"], results["b-spectral"]
    print(f"\n{args.n:,} x {args.dim:,} decoder, {args.clusters} clusters; UMAP n_neighbors {cfg.n_neighbors}, "
          f"3-D, cosine; k_edges {cfg.k_edges}, threshold {cfg.edge_threshold}; fresh process per variant\n")
    print("| variant | wall s | CPU s | k-NN s | UMAP s | ratio (a)/this | trustworthiness | edges = brute force |")
    print("|---|---|---|---|---|---|---|---|")
    names = {"a": "(a) seed: UMAP defaults (own pynndescent k-NN) + exact k-NN for edges",
             "b": f"(b) asset: one exact blocked k-NN (k={cfg.knn_k}) -> edges + UMAP precomputed_knn, PCA init",
             "b-spectral": "(b') (b) with init=spectral (umap-learn's default init)"}
    for v, r in results.items():
        ratio = "" if v == "a" else f"{a['wall'] / r['wall']:.2f}x"
        check = f"{equal}/{len(rows)} rows" if v == "b" else ""
        print(f"| {names[v]} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['knn']:.1f} | {r['umap']:.1f} | {ratio} | "
              f"{r['trust']:.4f} | {check} |")
    print(f"\nload average before / after: {load:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"trustworthiness difference (b) - (a): {b['trust'] - a['trust']:+.4f}; "
          f"(b') - (a): {b2['trust'] - a['trust']:+.4f}")


if __name__ == "__main__":
    main()
