"""Test builders: small real SAELens SAEs."""

from __future__ import annotations

from pathlib import Path

import torch
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig


def build_topk_sae(d_in: int = 16, d_sae: int = 32, k: int = 4, seed: int = 0,
                   hook_name: str = "blocks.1.hook_resid_post") -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=SAEMetadata(hook_name=hook_name)))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return sae


def save_topk_sae(path: Path, **kwargs) -> TopKSAE:
    sae = build_topk_sae(**kwargs)
    sae.save_model(path)
    return sae
