"""``scale.py --gemma <dir>``: the 16,384-latent SAE ``benchmarks/gemma_sae.py`` trained on Gemma 3 270M, run through
``analyze_sae`` the way a researcher's machine loads Gemma: the model by its hub id.

A hub-shaped server on 127.0.0.1 (``tests/hub_server.py``, ``HF_ENDPOINT``) serves ``google/gemma-3-270m`` (the
packaged GGUF, dequantized to float32). A JumpReLU SAE is published in ``google/gemma-scope-2-270m-pt`` in Gemma
Scope 2's layout at ``layer_N_width_16k_l0_medium`` and named as the packaged
``gemma-3-270m@gemmascope-2-res-16k`` names it (``sae: {source: saelens, release: gemma-scope-2-270m-pt-res}``); a
TopK SAE (which Gemma Scope 2's layout cannot hold) is read from its SAELens folder (``sae: {source: local}``).
There are no Neuronpedia ids: Neuronpedia has no explanations for this SAE, so SFAL scores the platform's own
labels. After the run, the same SFAL NDCG is computed with the explanation embeddings shuffled across the explained
features: the control a real alignment has to beat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
import yaml

KEY = "gemma-3-270m@trained-16k"
RELEASE = "gemma-scope-2-270m-pt-res"


def write_catalog(path: Path, layer: int, sae_dir: Path | None) -> None:
    """The benchmark's catalog: the SAE from the hub (``sae_dir`` None) or from the SAELens folder ``sae_dir``."""
    sae = ({"source": "saelens", "release": RELEASE, "id": "layer_{layer}_width_16k_l0_medium"} if sae_dir is None
           else {"source": "local", "path": str(sae_dir)})
    entry = {"description": "Gemma 3 270M with a 16k SAE trained by the platform",
             "language_model": {"hub_id": "google/gemma-3-270m"}, "hook": "blocks.{layer}.hook_resid_post",
             "d_model": 640, "layers": [layer], "sae": sae}
    path.write_text(yaml.safe_dump({"models": {KEY: entry}}, sort_keys=False))


def publish(sae_dir: Path, root: Path, layer: int) -> dict:
    """The hub's repos under ``root``: the model, and a JumpReLU SAE in Gemma Scope 2's layout. Returns the training
    record of ``sae_dir`` (``training.json``)."""
    from sae_lens import SAE

    from tests.gemma_scope_files import publish_jumprelu_sae, publish_model

    record = json.loads((sae_dir / "training.json").read_text())
    if record["architecture"] == "jumprelu":
        publish_jumprelu_sae(SAE.load_from_disk(str(sae_dir / "saelens"), device="cpu"), root, layer)
    publish_model(root)
    return record


def hub_env(url: str, home: Path) -> dict[str, str]:
    """What a child process needs to load from the hub at ``url`` (online, its own cache)."""
    return {"HF_ENDPOINT": url, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}


def shuffle_control(lake: Path, layer: int, seed: int = 0) -> dict[str, float]:
    """Mean SFAL NDCG over the explained features with the explanations as stored and with their embeddings
    permuted among the explained features (seeded)."""
    from sae_assets.core.alignment.sfal import sfal_ndcg
    from sae_assets.core.common.list_columns import list_matrix
    from sae_assets.core.scan.cooccurrence import dense_counts

    def read(table: str) -> pl.DataFrame:
        return pl.read_delta(str(lake / table)).filter(pl.col("model") == KEY, pl.col("layer") == str(layer))

    cooc = read("cooccurrence")
    d, n_windows = cooc.height, int(cooc["n_windows"].max())
    counts = dense_counts(cooc.select("feature", "marginal", "partners", "counts"), d, torch.device("cpu"))
    embedded = read("explanation_embeddings")
    rows = torch.from_numpy(embedded["feature"].to_numpy().astype(np.int64))
    matrix = torch.from_numpy(list_matrix(embedded["embedding"], np.float64))
    out = {}
    for name, order in (("ndcg", torch.arange(len(rows))),
                        ("ndcg_shuffled", torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)))):
        vectors = torch.zeros((d, matrix.shape[1]), dtype=torch.float64)
        vectors[rows] = matrix[order]
        out[name] = float(sfal_ndcg(counts, n_windows, vectors)[rows].mean())
    out["explained"] = float(len(rows))
    return out


def main(args: argparse.Namespace) -> None:
    """The Gemma row: the trained 16k SAE through the hub-shaped server, then the SFAL shuffle control."""
    from benchmarks.scale import gb, measure, render, run_env
    from tests.hub_server import HubServer

    tmp = Path(tempfile.mkdtemp(prefix="sae-scale-gemma-"))
    print(f"work directory {tmp}", file=sys.stderr)
    try:
        record = publish(args.gemma, tmp / "hub", args.layer)
        from_hub = record["architecture"] == "jumprelu"
        write_catalog(tmp / "catalog.yaml", args.layer, None if from_hub else args.gemma / "saelens")
        work = tmp / "run"
        with HubServer(tmp / "hub") as hub:
            env = {**run_env(work, tmp / "catalog.yaml", args.ev_floor), **hub_env(hub.url, tmp / "hf")}
            print(f"Gemma {record['d_sae']:,}: running analyze_sae ({work / 'run.log'})", file=sys.stderr)
            result = measure(work, env, KEY, record["d_sae"], round(record["l0"], 1), args)
        result["label"] = f"Gemma 3 270M {record['d_sae']:,}"
        table = render([result])
        control = shuffle_control(work / "lake", args.layer) if result["status"] == "SUCCESS" else {}
        lines = [f"- SAE: {record['architecture']} (k {record['k']}) trained by benchmarks/gemma_sae.py on "
                 f"{record['hook']}: {record['training_tokens']:,} tokens x {record['epochs']:g} epochs, "
                 f"{record['train_seconds']:.0f} s; held-out EV {record['explained_variance']:.3f}, "
                 f"L0 {record['l0']:.1f}, dead {record['dead_fraction']:.1%}",
                 "- loaded: the model by its hub id (google/gemma-3-270m) from the loopback hub; the SAE "
                 + ("from it too, as Gemma Scope 2's layer_N_width_16k_l0_medium" if from_hub
                    else "from its SAELens folder"),
                 f"- peak RSS: {gb(result['peak'])} GB (target <= 6 GB)"]
        if control:
            lines.append(f"- SFAL mean NDCG over the {control['explained']:,.0f} explained features: "
                         f"{control['ndcg']:.4f}; explanations shuffled among them: {control['ndcg_shuffled']:.4f}")
        print(table + "\n" + "\n".join(lines))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# analyze_sae on Gemma 3 270M at 16k ({time.strftime('%Y-%m-%d %H:%M')}, "
                            f"{os.cpu_count()} cores, layer {args.layer}, scan tokens {args.tokens or 'demo default'})"
                            f"\n\n{table}\n\n" + "\n".join(lines) + "\n")
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
