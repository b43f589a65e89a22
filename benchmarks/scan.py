"""Activation-scan throughput: bare forward to the hook vs the full scan vs an SFAL-style baseline.

    .venv/bin/python benchmarks/scan.py                        # embedded default, layer 6, CPU
    .venv/bin/python benchmarks/scan.py --model gemma-2-2b-random --device cuda --tokens 1000000

Same model, SAE and documents for every row, in one process:
  (a) bare:     the language model run to the hook layer only, in the scan's own padded batches;
  (b) scan:     sae_assets' one-pass scan (stats + examples + co-occurrence, tables built);
  (c) baseline: SFAL's loop: batch 1, a full ``run_with_cache`` per document (every layer, every hook
                cached), SAE encode, and co-occurrence as one dense outer product per window.
Targets: scan >= 0.9 x bare (issue 17), scan >= 20 x baseline (tokens/s).

The forward inside each scan run is timed too (its ``hook_activations`` calls): its share of the scan's time is
the same ratio measured on the same batches, moments apart, so a host whose speed drifts between the (a) and (b)
runs (some do, by 1.5x within minutes) moves both parts alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sae_assets.core.common.heap import retained_heap  # noqa: E402
from sae_assets.core.scan.activation_examples import ExampleConfig  # noqa: E402
from sae_assets.core.scan.activation_scan import ScanConfig, document_batches, run_scan  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def embedded(layer: int, device: torch.device):
    from sae_lens import SAE

    from sae_assets.catalog import load_catalog
    from sae_assets.resources.corpus import OFFLINE_WIKI, load_corpus
    from sae_assets.resources.language_model import load_language_model
    from sae_assets.resources.sae_source import trained_sae_dir

    entry = load_catalog().entry("smollm2-135m@demo-res")
    lm = load_language_model(entry.language_model, device, torch.float32)
    sae_dir = trained_sae_dir(REPO / "dagster_home" / "lake", entry.key, layer)
    if (sae_dir / "cfg.json").exists():
        sae, what = SAE.load_from_disk(str(sae_dir), device=str(device)), f"trained SAE {sae_dir}"
    else:
        from tests.builders import build_topk_sae

        sae = build_topk_sae(d_in=576, d_sae=2048, k=32).to(device)
        what = "random TopK SAE (run the demo to train one)"
    texts = load_corpus(OFFLINE_WIKI).documents

    def documents(context: int):
        for i, text in enumerate(texts):
            yield i, [lm.bos_token_id, *lm.tokenize(text)][:context]

    return lm, sae, entry.hook_name(layer), documents, lm.bos_token_id, lm.token_strings, what


def random_model(name: str, layer: int, device: torch.device, dtype: torch.dtype):
    """A model with random weights and the shape of gemma-2-2b (or a small one for a CPU smoke run)."""
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_assets.core.common.language_model import LanguageModel

    dims = {"gemma-2-2b-random": dict(d_model=2304, n_layers=26, n_heads=8, d_head=256, d_mlp=9216, d_vocab=256_000,
                                      d_sae=16_384),
            "small-random": dict(d_model=256, n_layers=4, n_heads=4, d_head=64, d_mlp=1024, d_vocab=32_000,
                                 d_sae=4096)}[name]
    d_sae = dims.pop("d_sae")
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_ctx=1024, act_fn="gelu_pytorch_tanh", normalization_type="RMS",
                                  positional_embedding_type="rotary", device=str(device), dtype=dtype, **dims)
    model = HookedTransformer(cfg).eval()
    lm = LanguageModel(name=name, model=model, tokenizer=None, device=device, dtype=dtype)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=cfg.d_model, d_sae=d_sae, device=str(device)))
    with torch.no_grad():
        sae.W_enc.normal_(0, cfg.d_model**-0.5)
        sae.W_dec.copy_(sae.W_enc.T)
        sae.threshold.fill_(1.5)  # ~L0 of a few dozen on random residuals
    g = torch.Generator().manual_seed(0)

    def documents(context: int):
        i = 0
        while True:
            yield i, [1, *torch.randint(2, cfg.d_vocab, (context - 1,), generator=g).tolist()]
            i += 1

    strings = lambda ids: [str(i) for i in ids]  # noqa: E731
    return lm, sae, f"blocks.{layer}.hook_resid_post", documents, 1, strings, "random JumpReLU SAE"


def take(documents, n_tokens: int):
    out, total = [], 0
    for doc in documents:
        out.append(doc)
        total += len(doc[1])
        if total >= n_tokens:
            break
    return out, total


def bare(lm, hook, docs, cfg: ScanConfig, pad_id: int, device) -> float:
    from sae_assets.core.scan.activation_scan import _pad

    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode(), retained_heap():  # as the scan's loop: memory reused, not faulted in each batch
        for batch in document_batches(iter(docs), lambda: cfg.batch_tokens, cfg.chunk_documents):
            _, tokens, _ = _pad(batch, pad_id)
            lm.hook_activations(tokens, hook)
    _sync(device)
    return time.perf_counter() - start


class TimedForward:
    """The model as the scan sees it, adding up the seconds of its forwards to the hook."""

    def __init__(self, lm, device: torch.device) -> None:
        self.lm, self.device, self.seconds = lm, device, 0.0

    def hook_activations(self, tokens: torch.Tensor, hook_name: str) -> torch.Tensor:
        _sync(self.device)
        start = time.perf_counter()
        acts = self.lm.hook_activations(tokens, hook_name)
        _sync(self.device)
        self.seconds += time.perf_counter() - start
        return acts


def scan(lm, hook, sae, docs, cfg, pad_id, device, strings) -> tuple[float, float]:
    """Seconds of one scan, and of the forwards inside it."""
    timed = TimedForward(lm, device)
    _sync(device)
    start = time.perf_counter()
    run_scan(timed, hook, sae, iter(docs), sum(len(d) for _, d in docs), pad_id, cfg, device, strings,
             lambda m: None)
    _sync(device)
    return time.perf_counter() - start, timed.seconds


def sfal_baseline(lm, hook, sae, docs, window: int, device) -> float:
    d_sae = int(sae.cfg.d_sae)
    counts = torch.zeros((d_sae, d_sae), dtype=torch.int32, device=device)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for _, ids in docs:
            _, cache = lm.model.run_with_cache(torch.tensor([ids], device=device))
            feats = sae.encode(cache[hook][0, 1:].float())
            for w in range(feats.shape[0] // window):
                present = (feats[w * window : (w + 1) * window].amax(0) > 0).int()
                counts += torch.outer(present, present)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", choices=["embedded", "gemma-2-2b-random", "small-random"])
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--tokens", type=int, default=100_000, help="tokens for the bare and scan rows")
    p.add_argument("--baseline-tokens", type=int, default=4_000, help="tokens for the (slow) baseline row")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=2, help="interleaved runs of (a) and (b); the best is kept")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.model == "embedded":
        lm, sae, hook, documents, pad_id, strings, what = embedded(args.layer, device)
    else:
        lm, sae, hook, documents, pad_id, strings, what = random_model(
            args.model, args.layer, device, getattr(torch, args.dtype))
    cfg = ScanConfig(context_size=args.context, window=args.window, batch_tokens=args.batch_tokens,
                     examples=ExampleConfig())
    docs, n_tokens = take(documents(args.context), args.tokens)
    base_docs, n_base = take(documents(args.context), args.baseline_tokens)
    warm, _ = take(documents(args.context), 2 * args.batch_tokens)
    bare(lm, hook, warm, cfg, pad_id, device)  # warm-up: allocator, kernels, caches
    scan(lm, hook, sae, warm, cfg, pad_id, device, strings)

    bare_s, scan_s, share = [], [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        bare_s.append(bare(lm, hook, docs, cfg, pad_id, device))
        total, forward = scan(lm, hook, sae, docs, cfg, pad_id, device, strings)
        scan_s.append(total)
        share.append(forward / total)
    rows = [("(a) bare forward to hook", n_tokens, min(bare_s)),
            ("(b) one-pass scan", n_tokens, min(scan_s)),
            ("(c) SFAL-style baseline", n_base, sfal_baseline(lm, hook, sae, base_docs, args.window, device))]
    rate = {name: n / s for name, n, s in rows}
    bare_rate, base_rate = rate[rows[0][0]], rate[rows[2][0]]
    print(f"\nmodel {args.model} ({lm.name}), {hook}, {what}; d_sae {int(sae.cfg.d_sae)}, device {device}, "
          f"{torch.get_num_threads()} threads, context {args.context}, window {args.window}, "
          f"batch {args.batch_tokens} tokens; best of {args.repeats} interleaved runs for (a) and (b) "
          f"(all: bare {', '.join(f'{t:.1f}' for t in bare_s)} s, scan {', '.join(f'{t:.1f}' for t in scan_s)} s); "
          f"the forward's share of each scan run: {', '.join(f'{r:.3f}' for r in share)}\n")
    print(f"| {'variant':<26} | {'tokens':>8} | {'seconds':>8} | {'tokens/s':>9} | {'x bare':>6} "
          f"| {'x baseline':>10} |")
    print(f"|{'-' * 28}|{'-' * 10}|{'-' * 10}|{'-' * 11}|{'-' * 8}|{'-' * 12}|")
    for name, n, s in rows:
        print(f"| {name:<26} | {n:>8,} | {s:>8.2f} | {n / s:>9,.0f} | {n / s / bare_rate:>6.2f} | "
              f"{n / s / base_rate:>10.1f} |")


if __name__ == "__main__":
    main()
