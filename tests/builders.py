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


def sample_evals(**overrides):
    """A plausible ``SaeEvals`` (a good SAE of 4 latents), fields replaced by ``overrides``."""
    import dataclasses

    from sae_assets.core.sae.evals import DENSITY_EDGES, SaeEvals

    histogram = [0] * (len(DENSITY_EDGES) - 1)
    histogram[20] = 3
    good = SaeEvals(
        n_tokens=1000, explained_variance=0.9, mse=1.0, cossim=0.95, l2_norm_in=10.0, l2_norm_out=9.5, l2_ratio=0.95,
        relative_reconstruction_bias=1.0, l1=50.0, l0=32.0,
        l0_quantiles={"p10": 30.0, "p50": 32.0, "p90": 34.0, "max": 40.0}, dead_fraction=0.25, dense_fraction=0.0,
        density_histogram=histogram, feature_density=torch.tensor([0.0, 0.01, 0.01, 0.01]), ce_loss_without_sae=3.0,
        ce_loss_with_sae=3.5, ce_loss_with_ablation=10.0, ce_loss_score=0.93, delta_lm_loss=0.5,
        kl_div_with_sae=0.6, kl_div_with_ablation=8.0, kl_div_score=0.92)
    return dataclasses.replace(good, **overrides)
