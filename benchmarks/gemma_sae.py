"""A 16,384-latent SAE trained by the platform on Gemma 3 270M (real features, not random weights), written as a
SAELens directory (``<out>/saelens``), for ``benchmarks/scale.py --gemma <out>``.

    .venv/bin/python benchmarks/gemma_sae.py --out /tmp/gemma-sae                    # layer 12, 16,384, TopK k 64
    .venv/bin/python benchmarks/gemma_sae.py --out /tmp/gemma-sae --architecture jumprelu --k 64

TopK is the default: at this budget (196,608 tokens x 3 epochs, 144 steps) SAELens's JumpReLU trainer with the
quadratic L0 loss (target 64) reached EV 0.952 at an L0 of 862, far from sparse
(benchmarks/results/2026-12-04-gemma-16k.md); TopK holds L0 at k by construction.

The same code as asset ``trained_sae`` (``sae_assets/core/sae/training_run.py``): the offline corpus packed into
128-token contexts, the hook activations of every non-BOS position collected once, SAELens's trainer over them for
``--epochs`` passes (bf16 autocast where the CPU multiplies it natively), the metrics on held-out tokens.
``<out>/training.json`` records the shape, budget, seconds and metrics. ``scale.py --gemma`` publishes a JumpReLU
SAE in Gemma Scope 2's on-hub layout and serves it, with the model, from a hub-shaped server on 127.0.0.1, so that
the platform loads both by their hub ids (``SAE.from_pretrained("gemma-scope-2-270m-pt-res", ...)``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL_KEY = "gemma-3-270m@demo-res"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--d-sae", type=int, default=16_384)
    parser.add_argument("--architecture", choices=("jumprelu", "topk"), default="topk")
    parser.add_argument("--k", type=int, default=64, help="TopK: latents per token; JumpReLU: target L0")
    parser.add_argument("--training-tokens", type=int, default=196_608)
    parser.add_argument("--eval-tokens", type=int, default=8_192)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--context-size", type=int, default=128)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from sae_assets.catalog import load_catalog
    from sae_assets.core.sae.token_contexts import pack_contexts
    from sae_assets.core.sae.training import SaeTrainingConfig
    from sae_assets.core.sae.training_run import train_on_contexts
    from sae_assets.resources.corpus import OFFLINE_WIKI, load_corpus
    from sae_assets.resources.language_model import load_language_model

    entry = load_catalog().entry(MODEL_KEY)
    hook = entry.hook_name(args.layer)
    start = time.perf_counter()
    lm = load_language_model(entry.language_model, torch.device("cpu"), torch.float32)
    load_s = time.perf_counter() - start
    total = args.training_tokens + args.eval_tokens
    # ~2% more contexts than tokens asked: the BOS separators between documents are not trained on
    contexts = pack_contexts(load_corpus(OFFLINE_WIKI).documents, lm.tokenize, lm.bos_token_id, args.context_size,
                             -(-int(total * 1.02) // (args.context_size - 1)))
    cfg = SaeTrainingConfig(architecture=args.architecture, d_sae=args.d_sae, k=args.k,
                            training_samples=int(args.training_tokens * args.epochs), batch_size=args.batch_size,
                            lr=args.lr, precision="auto")
    run = train_on_contexts(lm, contexts, hook, entry.language_model.hub_id, cfg, args.training_tokens,
                            lm_batch_size=16, device=torch.device("cpu"), report=logging.info)
    args.out.mkdir(parents=True, exist_ok=True)
    run.sae.save_model(str(args.out / "saelens"))
    record = {"model": entry.language_model.hub_id, "hook": hook, "architecture": args.architecture,
              "d_sae": args.d_sae, "k": args.k, "training_tokens": args.training_tokens, "epochs": args.epochs,
              "lr": args.lr, "batch_size": args.batch_size, "load_seconds": round(load_s, 1),
              "collect_seconds": round(run.collect_seconds, 1), "train_seconds": round(run.train_seconds, 1),
              **{k: v for k, v in run.metrics.as_dict().items()}}
    (args.out / "training.json").write_text(json.dumps(record, indent=1))
    logging.info("%s", json.dumps(record))


if __name__ == "__main__":
    main()
