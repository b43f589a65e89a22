"""Optimized prompts: discrete (GCG / EPO) vs continuous (embeddings + projection), side by side.

    .venv/bin/python benchmarks/prompt_opt.py                       # embedded default, layer 6, CPU
    .venv/bin/python benchmarks/prompt_opt.py --model gemma-2-2b-random --device cuda --dtype bfloat16

Same model, SAE, target features and random initial prompts for both methods, in one process. Targets:
the features with the highest dataset ``max_activation`` (``dagster_home/lake/feature_stats``, written by
the demo's scan; without it, a quick scan of ``--scan-tokens`` corpus tokens with the same SAE), else
(random-weight models) random features. Per method: optimization steps/s, mean activation
reached (clean forward of the final token ids), mean next-token CE of the prompt, and the fraction of
targets whose optimized prompt reaches the dataset's max activation (n/a for random-weight models).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scan import random_model  # noqa: E402
from sae_assets.core.prompts.continuous import optimize_continuous  # noqa: E402
from sae_assets.core.prompts.optimize import PromptOptConfig, optimize_discrete  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LAKE = REPO / "dagster_home" / "lake"
MODEL_KEY = "smollm2-135m@demo-res"


def embedded(layer: int, device: torch.device):
    from sae_lens import SAE

    from sae_assets.catalog import load_catalog
    from sae_assets.resources.language_model import load_language_model
    from sae_assets.resources.sae_source import trained_sae_dir

    entry = load_catalog().entry(MODEL_KEY)
    lm = load_language_model(entry.language_model, device, torch.float32)
    sae_dir = trained_sae_dir(LAKE, entry.key, layer)
    if (sae_dir / "cfg.json").exists():
        sae = SAE.load_from_disk(str(sae_dir), device=str(device))
        return lm, sae, entry.hook_name(layer), f"trained SAE {sae_dir}"
    from tests.builders import build_topk_sae

    sae = build_topk_sae(d_in=576, d_sae=2048, k=32).to(device)
    return lm, sae, entry.hook_name(layer), "random TopK SAE (run the demo to train one)"


def dataset_max(layer: int) -> dict[int, float]:
    """Feature -> max activation over the demo's scanned corpus, or {} when feature_stats is absent."""
    if not (LAKE / "feature_stats").exists():
        return {}
    import polars as pl

    stats = pl.scan_delta(str(LAKE / "feature_stats")).filter(
        (pl.col("model") == MODEL_KEY) & (pl.col("layer") == str(layer))).select("feature", "max_activation").collect()
    return {int(f): float(m) for f, m in stats.iter_rows()}


def scanned_max(lm, sae, hook: str, n_tokens: int, context: int = 128) -> dict[int, float]:
    """Feature -> max activation over the first ``n_tokens`` of the offline corpus (BOS + document, truncated to
    ``context``; BOS excluded), when the demo's feature_stats are absent."""
    from sae_assets.core.scan.activation_scan import _pad
    from sae_assets.resources.corpus import OFFLINE_WIKI, load_corpus

    docs, total = [], 0
    for i, text in enumerate(load_corpus(OFFLINE_WIKI).documents):
        ids = [lm.bos_token_id, *lm.tokenize(text)][:context]
        docs.append((i, ids))
        total += len(ids)
        if total >= n_tokens:
            break
    best = torch.zeros(int(sae.cfg.d_sae))
    with torch.inference_mode():
        for start in range(0, len(docs), 32):
            _, tokens, lengths = _pad(docs[start: start + 32], lm.bos_token_id)
            feats = sae.encode(lm.hook_activations(tokens, hook).to(best.dtype))  # [b, seq, d_sae]
            pos = torch.arange(tokens.shape[1])
            valid = (pos >= 1) & (pos < lengths[:, None])
            best = torch.maximum(best, feats[valid.to(feats.device)].amax(0).cpu())
    return dict(enumerate(best.tolist()))


def targets(d_sae: int, maxima: dict[int, float], n: int, seed: int) -> list[int]:
    if maxima:
        return sorted(maxima, key=lambda f: -maxima[f])[:n]
    return torch.randperm(d_sae, generator=torch.Generator().manual_seed(seed))[:n].tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", choices=["embedded", "gemma-2-2b-random", "small-random"])
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--features", type=int, default=8, help="target features")
    p.add_argument("--length", type=int, default=8, help="prompt tokens (BOS not counted)")
    p.add_argument("--steps", type=int, default=30, help="discrete steps (max)")
    p.add_argument("--continuous-steps", type=int, default=60)
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64, help="candidates per discrete step")
    p.add_argument("--fluency-weight", type=float, default=0.0)
    p.add_argument("--position", default="last", choices=["last", "any"])
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--restarts", type=int, default=0, help="discrete: random restarts on a plateau")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scan-tokens", type=int, default=20_000,
                   help="without the demo's feature_stats: corpus tokens scanned for each feature's max (0: none)")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.model == "embedded":
        lm, sae, hook, what = embedded(args.layer, device)
    else:
        lm, sae, hook, _, _, _, what = random_model(args.model, args.layer, device, getattr(torch, args.dtype))
    maxima, source = (dataset_max(args.layer), "demo feature_stats") if args.model == "embedded" else ({}, "")
    if args.model == "embedded" and not maxima and args.scan_tokens > 0:
        maxima, source = scanned_max(lm, sae, hook, args.scan_tokens), f"scan of {args.scan_tokens:,} corpus tokens"
    features = targets(int(sae.cfg.d_sae), maxima, args.features, args.seed)
    cfg = PromptOptConfig(length=args.length, max_steps=args.steps, top_k=args.top_k, batch_size=args.batch_size,
                          fluency_weight=args.fluency_weight, position=args.position, patience=args.patience,
                          continuous_steps=args.continuous_steps, seed=args.seed, restarts=args.restarts)
    methods = {"discrete": optimize_discrete, "continuous": optimize_continuous}
    warm = PromptOptConfig(length=args.length, max_steps=1, continuous_steps=1, batch_size=args.batch_size)
    for run in methods.values():  # warm-up: allocator, kernels, caches
        run(lm, hook, sae, features[0], warm)

    results = {name: [] for name in methods}
    for feature in features:
        for name, run in methods.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            r = run(lm, hook, sae, feature, cfg)
            results[name].append(r)
            print(f"feature {feature} {name}: activation {r.activation:.3f}, {r.steps} steps in {r.seconds:.1f} s",
                  file=sys.stderr)

    print(f"\nmodel {args.model} ({lm.name}), {hook}, {what}; d_sae {int(sae.cfg.d_sae)}, device {device}, "
          f"{torch.get_num_threads()} threads; {len(features)} targets "
          f"({f'highest max_activation, {source}' if maxima else 'random: no dataset max'}); length {args.length}, "
          f"position {args.position}, fluency {args.fluency_weight}; discrete: <= {args.steps} steps, top-k "
          f"{args.top_k}, batch {args.batch_size}; continuous: <= {args.continuous_steps} steps; patience "
          f"{args.patience}, restarts {args.restarts}\n")
    print(f"| {'method':<10} | {'steps':>5} | {'seconds':>7} | {'steps/s':>7} | {'mean act':>8} | {'mean CE':>7} "
          f"| {'>= data max':>11} | {'act / max':>9} |")
    print(f"|{'-' * 12}|{'-' * 7}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 9}|{'-' * 13}|{'-' * 11}|")
    for name, rs in results.items():
        steps, secs = sum(r.steps for r in rs), sum(r.seconds for r in rs)
        act = sum(r.activation for r in rs) / len(rs)
        ce = sum(r.cross_entropy for r in rs) / len(rs)
        if maxima:
            reached = f"{sum(r.activation >= maxima[r.feature] for r in rs) / len(rs):.2f}"
            ratio = f"{sum(r.activation / maxima[r.feature] for r in rs if maxima[r.feature] > 0) / len(rs):.2f}"
        else:
            reached = ratio = "n/a"
        print(f"| {name:<10} | {steps:>5} | {secs:>7.1f} | {steps / secs:>7.2f} | {act:>8.3f} | {ce:>7.2f} "
              f"| {reached:>11} | {ratio:>9} |")

    print(f"\n| {'feature':>7} | {'data max':>8} | {'discrete':>8} | {'continuous':>10} | discrete prompt")
    print(f"|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 12}|{'-' * 40}")
    for d, c in zip(results["discrete"], results["continuous"], strict=True):
        top = f"{maxima[d.feature]:.3f}" if maxima else "n/a"
        prompt = "".join(d.token_strings) if d.token_strings else " ".join(map(str, d.token_ids))
        print(f"| {d.feature:>7} | {top:>8} | {d.activation:>8.3f} | {c.activation:>10.3f} | {prompt!r}")


if __name__ == "__main__":
    main()
