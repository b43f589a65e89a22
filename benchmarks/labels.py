"""Label throughput per labeller backend, and whether the detection score means something.

    .venv/bin/python benchmarks/labels.py [--layer 6] [--features 48]

Needs the demo's activation_examples (run `python -m sae_assets.demo` first). In one process:
  throughput: labels/s of the local backend (SmolLM2-135M-Instruct, batched generate) and of the
              OpenAI-compatible backend against a server on 127.0.0.1 that runs the same model;
  quality:    mean embedding-AUROC detection score of LLM labels, keyword labels, shuffled labels
              (another feature's LLM label) and random-word labels. Controls must sit near 0.5.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sae_assets.core.labels.evidence import gather_evidence  # noqa: E402
from sae_assets.core.labels.labelling import background_counts  # noqa: E402
from sae_assets.core.labels.runs import embedding_scores, keyword_labels, llm_labels  # noqa: E402
from sae_assets.resources.device import DeviceResource  # noqa: E402
from sae_assets.resources.embedder import EmbedderResource  # noqa: E402
from sae_assets.resources.labeller import LabellerResource  # noqa: E402

LAKE = Path(__file__).resolve().parent.parent / "dagster_home" / "lake"


def serve(local_chat) -> tuple[ThreadingHTTPServer, str]:
    """An OpenAI-compatible /v1/chat/completions backed by the local model."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            [reply] = local_chat.chat([body["messages"]], body.get("max_tokens", 24))
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply.text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m@demo-res")
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--features", type=int, default=48)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    examples = pl.scan_delta(str(LAKE / "activation_examples")).filter(
        (pl.col("model") == args.model) & (pl.col("layer") == str(args.layer))).collect()
    if examples.is_empty():
        sys.exit("No activation_examples for that partition: run `python -m sae_assets.demo` first.")
    features = sorted(examples.filter(pl.col("kind") == "top")["feature"].unique().to_list())[: args.features]
    evidence = gather_evidence(examples, features, n_shown=8, n_holdout=6)
    device = DeviceResource(device=args.device)
    local = LabellerResource(device=device, batch_size=8)
    chat = local.client()
    llm_labels(chat, 24, {f: evidence[f] for f in features[:2]}, chunk=2)  # warm-up

    rows = []
    start = time.perf_counter()
    local_out = llm_labels(chat, local.max_new_tokens, evidence, chunk=16)
    rows.append(("local (batched generate)", len(local_out), time.perf_counter() - start))
    server, url = serve(chat)
    remote = LabellerResource(backend="openai", base_url=url, model="smollm2-135m-instruct", device=device).client()
    sub = {f: evidence[f] for f in features[:16]}
    start = time.perf_counter()
    remote_out = llm_labels(remote, local.max_new_tokens, sub, chunk=16)
    rows.append(("openai-compatible (127.0.0.1)", len(remote_out), time.perf_counter() - start))
    server.shutdown()

    encode = EmbedderResource(device=device).encode
    llm = {f: label for f, (label, _) in local_out.items() if label}
    background = background_counts(examples["tokens"].to_list())
    keywords = {f: k or None for f, k in keyword_labels(evidence, background).items()}
    rng = random.Random(0)
    order = list(llm)
    shuffled = dict(zip(order, rng.sample([llm[f] for f in order], len(order)), strict=True))
    vocab = sorted({t.strip().lower() for toks in examples["tokens"] for t in toks if t.strip().isalpha()})
    random_words = {f: " ".join(rng.sample(vocab, 3)) for f in order}
    quality = [(name, embedding_scores(encode, labels, evidence)) for name, labels in
               [("LLM labels", llm), ("keyword labels", keywords), ("shuffled LLM labels", shuffled),
                ("random-word labels", random_words)]]

    print(f"\n{args.model} layer {args.layer}, {len(features)} features, device {args.device}\n")
    print(f"| {'labeller backend':<30} | {'labels':>6} | {'seconds':>8} | {'labels/s':>8} |")
    print(f"|{'-' * 32}|{'-' * 8}|{'-' * 10}|{'-' * 10}|")
    for name, n, s in rows:
        print(f"| {name:<30} | {n:>6} | {s:>8.1f} | {n / s:>8.2f} |")
    print(f"\n| {'labels scored':<22} | {'features':>8} | {'mean AUROC':>10} | {'std':>6} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 12}|{'-' * 8}|")
    for name, scores in quality:
        values = np.array(list(scores.values()))
        print(f"| {name:<22} | {len(values):>8} | {values.mean():>10.3f} | {values.std():>6.3f} |")


if __name__ == "__main__":
    main()
