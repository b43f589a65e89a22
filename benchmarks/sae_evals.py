"""``sae_evals`` at 2k-16k latents, and its truth checks, on the embedded default (SmolLM2-135M-Instruct).

    .venv/bin/python benchmarks/sae_evals.py --lake /tmp/ci-clone/dagster_home/lake     # after the demo ran there
    .venv/bin/python benchmarks/sae_evals.py --widths 2048 16384 --tokens 6144 --out benchmarks/results/x.md

One process, the same held-out contexts for every row (the ``cpu`` budget's 6,144 tokens by default, contexts of
128, as the asset packs them), each row timed from the first forward to the metrics:

- the demo's trained SAEs (``--lake``: ``<lake>/trained_saes/smollm2-135m@demo-res/layer-<N>``) at their own hook,
  and layer 2's SAE at layer 6's hook: a mismatched SAE must score clearly worse;
- GemmaScope-shaped random JumpReLU SAEs of each width (``benchmarks/scale_saes.py``, calibrated to L0 ~80 at
  ``--layer``): the 16k one is what ``benchmarks/scale.py`` runs; random weights must score near or below zero,
  and the verdict must say so.

The target (issue 35): at 16,384 latents on the demo's budget the evals take at most 60 s of a run. Peak RSS is the
process's so far (the model and the largest SAE included).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scale_out import cpu_description  # noqa: E402
from benchmarks.scale_saes import build_jumprelu_sae, layer_activations  # noqa: E402
from sae_assets.core.sae.eval_table import verdict  # noqa: E402
from sae_assets.core.sae.evals import evaluate_spliced, rows_per_batch  # noqa: E402
from sae_assets.core.sae.token_contexts import held_out_contexts  # noqa: E402

MODEL_KEY = "smollm2-135m@demo-res"


def evaluate(lm, sae, hook: str, contexts: torch.Tensor, rows: int, ignore: list[int], what: str) -> dict:
    t0 = time.perf_counter()
    evals = evaluate_spliced(lm, sae, hook, contexts, rows, ignore)
    seconds = time.perf_counter() - t0
    return {"what": what, "hook": hook, "d_sae": int(sae.cfg.d_sae), "seconds": seconds,
            "tokens_per_s": contexts.numel() / seconds,
            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,  # peak so far (KiB on Linux)
            "ev": evals.explained_variance, "l0": evals.l0, "ce_score": evals.ce_loss_score,
            "delta": evals.delta_lm_loss, "kl_score": evals.kl_div_score, "verdict": verdict(evals)}


def render(rows: list[dict], tokens: int, per_forward: int) -> str:
    lines = [f"# sae_evals at scale, {datetime.date.today()}", "",
             f"Host: {cpu_description()}; Python {platform.python_version()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. {tokens:,} held-out tokens (contexts of 128, {per_forward} per "
             "forward), three forwards of the whole model per batch.", "",
             "| SAE | hook | d_sae | seconds | tok/s | peak RSS GB | EV | L0 | CE loss score | delta LM loss | "
             "KL score |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['hook']} | {r['d_sae']:,} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} | "
                     f"{r['rss_gb']:.1f} | {r['ev']:.3f} | {r['l0']:.1f} | {r['ce_score']:.3f} | "
                     f"{r['delta']:+.3f} | {r['kl_score']:.3f} |")
    lines += ["", "Verdicts:", ""] + [f"- {r['what']} at {r['hook']}: {r['verdict']}" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, help="a lake where the demo ran (its trained SAEs)")
    parser.add_argument("--widths", type=int, nargs="*", default=[2048, 16384])
    parser.add_argument("--layer", type=int, default=4, help="hook layer of the random SAEs")
    parser.add_argument("--tokens", type=int, default=6144)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from sae_lens import SAE
    from sae_lens.util import get_special_token_ids

    from sae_assets.catalog import load_catalog
    from sae_assets.resources.corpus import OFFLINE_WIKI, load_corpus
    from sae_assets.resources.language_model import load_language_model
    from sae_assets.resources.sae_source import trained_sae_dir

    lm = load_language_model(load_catalog().entry(MODEL_KEY).language_model, torch.device("cpu"), torch.float32)
    documents = load_corpus(OFFLINE_WIKI).documents
    contexts, _ = held_out_contexts(documents, lm.tokenize, lm.bos_token_id, 128, -(-args.tokens // 128))
    rows_per = rows_per_batch(128, int(lm.model.cfg.d_vocab), 2048 * 1024**2, 32)
    ignore = sorted(get_special_token_ids(lm.tokenizer))
    rows = []
    if args.lake is not None:
        saes = {layer: SAE.load_from_disk(str(trained_sae_dir(args.lake, MODEL_KEY, layer)))
                for layer in (2, 4, 6) if (trained_sae_dir(args.lake, MODEL_KEY, layer) / "cfg.json").exists()}
        for layer, sae in saes.items():
            rows.append(evaluate(lm, sae, f"blocks.{layer}.hook_resid_post", contexts, rows_per, ignore,
                                 f"demo SAE, layer {layer}"))
        if 2 in saes:
            rows.append(evaluate(lm, saes[2], "blocks.6.hook_resid_post", contexts, rows_per, ignore,
                                 "demo SAE of layer 2, mismatched"))
    hook = f"blocks.{args.layer}.hook_resid_post"
    acts = layer_activations(args.layer, 16_384)
    for width in args.widths:
        sae = build_jumprelu_sae(acts, width, 80.0, hook)
        rows.append(evaluate(lm, sae, hook, contexts, rows_per, ignore, f"random JumpReLU {width // 1024}k"))
        del sae
    table = render(rows, contexts.numel(), rows_per)
    sys.stdout.write(table)
    if args.out is not None:
        args.out.write_text(table)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
