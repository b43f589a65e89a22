"""GemmaScope-shaped JumpReLU SAEs of any width for the embedded default (SmolLM2-135M-Instruct), calibrated on
real activations, written as SAELens directories (``cfg.json`` + ``sae_weights.safetensors``, JumpReLUSAE
``save_model``). ``benchmarks/scale.py`` runs the platform on them; they are random, not trained:

- decoder rows: seeded random unit vectors; encoder = decoder transposed; ``b_enc`` = 0;
- ``b_dec`` = the mean activation, subtracted from the input (``apply_b_dec_to_input``), so pre-activations are
  projections of centred activations;
- per-latent JumpReLU thresholds: each latent gets a target density (log-normal spread, mean ``l0 / d_sae``,
  clipped to [2 / tokens, 0.2]) and its threshold is that quantile of its pre-activation over real layer
  activations of the offline corpus (BOS left out, as the scan does), so the mean L0 per token is about ``l0``.

    .venv/bin/python benchmarks/scale_saes.py --out /tmp/saes --widths 2048 8192 --layer 4

writes ``<out>/<d_sae>/layer-<layer>/`` and prints the L0 measured on held-out tokens. Also here: the catalog
entries naming such SAEs (``smollm2-135m@scale-<N>k``, ``sae: {source: local}``, Neuronpedia ids) and the
Neuronpedia-shaped explanation exports served for them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL_KEY, MODEL_ID = "smollm2-135m@demo-res", "smollm2-135m"
WORDS = ("token", "number", "city", "verb", "plural", "date", "code", "quote", "name", "science", "music", "sport")


def layer_activations(layer: int, n_tokens: int, context_size: int = 512) -> torch.Tensor:
    """``[n_tokens, d_model]`` float32 hook activations of the catalog's embedded default at ``layer``, one
    document per forward (BOS prepended, then dropped), documents in the corpus's order."""
    from sae_assets.catalog import load_catalog
    from sae_assets.resources.corpus import OFFLINE_WIKI, load_corpus
    from sae_assets.resources.language_model import load_language_model

    entry = load_catalog().entry(MODEL_KEY)
    lm = load_language_model(entry.language_model, torch.device("cpu"), torch.float32)
    hook = entry.hook_name(layer)
    rows, total = [], 0
    for text in load_corpus(OFFLINE_WIKI).documents:
        ids = [lm.bos_token_id, *lm.tokenize(text)][:context_size]
        if len(ids) < 2:
            continue
        acts = lm.hook_activations(torch.tensor([ids]), hook)[0, 1:].float().cpu()
        rows.append(acts)
        total += acts.shape[0]
        if total >= n_tokens:
            break
    return torch.cat(rows)[:n_tokens]


def target_densities(d_sae: int, l0: float, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """``[d_sae]`` firing rates, log-normal (sigma 1) around a mean of ``l0 / d_sae``, in [2 / n_tokens, 0.2]."""
    raw = np.exp(rng.normal(0.0, 1.0, d_sae))
    low, high, mean = 2.0 / n_tokens, 0.2, l0 / d_sae
    scale = mean / raw.mean()
    for _ in range(50):  # rescale until the clipped rates have the wanted mean
        scale *= mean / np.clip(raw * scale, low, high).mean()
    return np.clip(raw * scale, low, high)


@torch.no_grad()
def build_jumprelu_sae(acts: torch.Tensor, d_sae: int, l0: float, hook_name: str, seed: int = 0,
                       block: int = 4096):
    """A SAELens ``JumpReLUSAE`` (float32, CPU) calibrated on ``acts [n, d_in]`` to a mean L0 of about ``l0``."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    n, d_in = acts.shape
    gen = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d_in, generator=gen)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    mean = acts.mean(dim=0)
    centred = acts - mean
    density = target_densities(d_sae, l0, n, np.random.default_rng(seed))
    above = torch.from_numpy(np.maximum(1, np.round(density * n)).astype(np.int64))  # tokens above the threshold
    threshold = torch.empty(d_sae)
    for start in range(0, d_sae, block):
        end = min(start + block, d_sae)
        pre = (centred @ w_dec[start:end].T).sort(dim=0).values  # [n, b] ascending
        rank = (n - 1 - above[start:end]).clamp(0, n - 1)  # value below which all but `above` tokens lie
        threshold[start:end] = pre.gather(0, rank.unsqueeze(0)).squeeze(0).clamp_min(1e-4)
    cfg = JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu", apply_b_dec_to_input=True,
                            metadata=SAEMetadata(hook_name=hook_name, model_name=MODEL_KEY.split("@")[0],
                                                 prepend_bos=True))
    sae = JumpReLUSAE(cfg)
    sae.W_dec.copy_(w_dec)
    sae.W_enc.copy_(w_dec.T)
    sae.b_enc.zero_()
    sae.b_dec.copy_(mean)
    sae.threshold.copy_(threshold)
    return sae


def model_key(d_sae: int) -> str:
    return f"smollm2-135m@scale-{d_sae // 1024}k"


def explanation_batches(widths: list[int], layer: int, batch_size: int = 1024) -> dict[str, list[dict]]:
    """Neuronpedia export batches for every width: two explanations per feature (one dropped by dedup), seeded by
    the width, so a width gets the same texts whatever other widths are run."""
    batches = {}
    for d_sae in widths:
        rng = np.random.default_rng(d_sae)
        source = f"{layer}-scale-{d_sae // 1024}k"
        for n, start in enumerate(range(0, d_sae, batch_size)):
            batches[f"v1/{MODEL_ID}/{source}/explanations/batch-{n}.jsonl.gz"] = [
                {"modelId": MODEL_ID, "layer": source, "index": str(i),
                 "description": " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))),
                 "typeName": "oai_token-act-pair", "explanationModelName": f"model-{c}",
                 "createdAt": f"2024-0{1 + c}-01T00:00:00Z"}
                for i in range(start, min(start + batch_size, d_sae)) for c in range(2)]
    return batches


def write_catalog(path: Path, saes: dict[int, Path], layer: int) -> None:
    base = yaml.safe_load((ROOT / "sae_assets" / "catalog" / "catalog.yaml").read_text())["models"][MODEL_KEY]
    models = {model_key(d): {
        "language_model": base["language_model"], "hook": base["hook"], "d_model": base["d_model"],
        "layers": [layer], "sae": {"source": "local", "path": str(sae_dir / "layer-{layer}")},
        "neuronpedia": {"model_id": MODEL_ID, "source_id": f"{{layer}}-scale-{d // 1024}k"}}
        for d, sae_dir in saes.items()}
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))


@torch.no_grad()
def measured_l0(sae, acts: torch.Tensor, batch: int = 1024) -> float:
    active = sum(int((sae.encode(acts[i : i + batch]) > 0).sum()) for i in range(0, acts.shape[0], batch))
    return active / max(acts.shape[0], 1)


def write_saes(out: Path, widths: list[int], layer: int, tokens: int, l0: float, seed: int = 0) -> dict:
    """``<out>/<d_sae>/layer-<layer>/`` for each width; returns {d_sae: {"l0_calibration", "l0_heldout", ...}}."""
    start = time.perf_counter()
    acts = layer_activations(layer, tokens + tokens // 4)
    calib, heldout = acts[:tokens], acts[tokens:]
    collect_s = time.perf_counter() - start
    report = {}
    for d_sae in widths:
        t0 = time.perf_counter()
        sae = build_jumprelu_sae(calib, d_sae, l0, f"blocks.{layer}.hook_resid_post", seed)
        path = out / str(d_sae) / f"layer-{layer}"
        sae.save_model(str(path))
        report[d_sae] = {"path": str(path), "l0_calibration": round(measured_l0(sae, calib), 1),
                         "l0_heldout": round(measured_l0(sae, heldout), 1), "tokens": calib.shape[0],
                         "seconds": round(time.perf_counter() - t0 + collect_s / len(widths), 1)}
        del sae
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--widths", type=int, nargs="+", default=[2048, 8192, 16384, 32768])
    parser.add_argument("--layer", type=int, default=4)
    parser.add_argument("--calibration-tokens", type=int, default=8192)
    parser.add_argument("--l0", type=float, default=80.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    report = write_saes(args.out, args.widths, args.layer, args.calibration_tokens, args.l0, args.seed)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
