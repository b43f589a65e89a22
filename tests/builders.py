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


def build_tiny_lm(d_model: int = 16, n_layers: int = 2, d_vocab: int = 50, seed: int = 0):
    """A random-weight TransformerLens model (no hub), wrapped like the platform's language models."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_assets.core.common.language_model import LanguageModel

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=d_model, n_ctx=256, d_head=4, n_heads=d_model // 4,
                                  d_vocab=d_vocab, act_fn="gelu", d_mlp=2 * d_model, seed=seed)
    model = HookedTransformer(cfg)
    model.eval()
    return LanguageModel(name="tiny", model=model, tokenizer=None, device=torch.device("cpu"), dtype=torch.float32)


class OneHotModel:
    """Hook activations = one-hot of the token ids: with :class:`ReluSae`, feature f fires exactly on token f."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def hook_activations(self, tokens: torch.Tensor, hook_name: str) -> torch.Tensor:
        return torch.nn.functional.one_hot(tokens, self.vocab).float()


class ReluSae(torch.nn.Module):
    """An SAE whose latents are the input's coordinates (encode = ReLU, decode = identity)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.cfg = type("Cfg", (), {"d_sae": d, "d_in": d})()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f
