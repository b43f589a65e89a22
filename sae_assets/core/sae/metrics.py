"""How well an SAE reconstructs activations: explained variance, L0, dead fraction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SaeMetrics:
    explained_variance: float
    """1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over all tokens."""
    mse: float
    """Mean squared reconstruction error per element."""
    l0: float
    """Mean number of active latents per token."""
    dead_fraction: float
    """Fraction of latents that never fired on the evaluated tokens."""
    n_tokens: int
    feature_density: torch.Tensor
    """``[d_sae]`` fraction of tokens each latent fired on."""

    def as_dict(self) -> dict[str, float | int]:
        return {"explained_variance": self.explained_variance, "mse": self.mse, "l0": self.l0,
                "dead_fraction": self.dead_fraction, "n_tokens": self.n_tokens}


@torch.inference_mode()
def evaluate_sae(sae: Any, activations: torch.Tensor, batch_size: int = 4096) -> SaeMetrics:
    """Metrics of a SAELens SAE (``encode``/``decode``) on ``activations [n_tokens, d_in]``."""
    if activations.ndim != 2 or activations.shape[0] == 0:
        raise ValueError(f"activations must be a non-empty [n_tokens, d_in] matrix, got {tuple(activations.shape)}")
    device = next(sae.parameters()).device
    n, d_in = activations.shape
    mean = activations.double().mean(0)
    sq_err = 0.0
    sq_tot = 0.0
    active = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    l0_sum = 0.0
    for start in range(0, n, batch_size):
        x = activations[start : start + batch_size].to(device=device, dtype=torch.float32)
        feats = sae.encode(x)
        recon = sae.decode(feats)
        sq_err += (x - recon).double().pow(2).sum().item()
        sq_tot += (x.double().cpu() - mean).pow(2).sum().item()
        fired = feats > 0
        l0_sum += fired.sum().item()
        active += fired.sum(0).double().cpu()
    density = active / n
    return SaeMetrics(
        explained_variance=1.0 - sq_err / sq_tot if sq_tot > 0 else float("nan"),
        mse=sq_err / (n * d_in),
        l0=l0_sum / n,
        dead_fraction=float((active == 0).double().mean()),
        n_tokens=n,
        feature_density=density.float(),
    )
