"""Running sums of an SAE evaluation, one batch at a time: what :mod:`sae_assets.core.sae.evals` adds up and
turns into SAELens's metrics at the end. Every sum is float64 on the CPU; each is over the evaluated tokens only
(special tokens left out, as SAELens's ``ignore_tokens``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

NORM_FLOOR = 1e-4
"""An input norm below this divides ``l2_ratio`` by 1 instead (SAELens's rule)."""


@dataclass
class ReconstructionSums:
    """Sums over tokens of the SAE's input ``x`` and output ``x_hat`` at the hook, and of its latents."""

    d_sae: int
    n_tokens: int = 0
    sum_x: torch.Tensor | None = None
    """``[d_in]`` sum of x (explained variance's mean)."""
    sum_sq_norm: float = 0.0
    """sum ||x||^2."""
    sum_sq_residual: float = 0.0
    """sum ||x - x_hat||^2."""
    sum_cossim: float = 0.0
    sum_norm_in: float = 0.0
    sum_norm_out: float = 0.0
    sum_l2_ratio: float = 0.0
    sum_x_hat_sq: float = 0.0
    """sum ||x_hat||^2 (relative reconstruction bias's numerator)."""
    sum_x_dot_x_hat: float = 0.0
    sum_l1: float = 0.0
    l0_counts: torch.Tensor = field(init=False)
    """``[d_sae + 1]`` int64: how many tokens had exactly that many active latents."""
    firing: torch.Tensor = field(init=False)
    """``[d_sae]`` float64: tokens on which each latent was active."""

    def __post_init__(self) -> None:
        self.l0_counts = torch.zeros(self.d_sae + 1, dtype=torch.int64)
        self.firing = torch.zeros(self.d_sae, dtype=torch.float64)

    def add(self, x: torch.Tensor, x_hat: torch.Tensor, latents: torch.Tensor) -> None:
        """``x, x_hat [n, d_in]`` and ``latents [n, d_sae]`` of the evaluated tokens."""
        x, x_hat = x.to(torch.float64), x_hat.to(torch.float64)
        self.n_tokens += x.shape[0]
        s = x.sum(0).cpu()
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.sum_sq_norm += float(x.pow(2).sum())
        self.sum_sq_residual += float((x - x_hat).pow(2).sum())
        norm_in, norm_out = x.norm(dim=-1), x_hat.norm(dim=-1)
        self.sum_cossim += float(((x * x_hat).sum(-1) / (norm_in * norm_out)).sum())
        self.sum_norm_in += float(norm_in.sum())
        self.sum_norm_out += float(norm_out.sum())
        self.sum_l2_ratio += float((norm_out / torch.where(norm_in.abs() < NORM_FLOOR, 1.0, norm_in)).sum())
        self.sum_x_hat_sq += float(norm_out.pow(2).sum())
        self.sum_x_dot_x_hat += float((x * x_hat).sum())
        active = latents != 0  # != 0, as SAELens counts signed (AbsTopK) latents too
        self.sum_l1 += float(latents.abs().sum(dtype=torch.float64))
        self.l0_counts += torch.bincount(active.sum(-1).cpu(), minlength=self.d_sae + 1)
        self.firing += active.sum(0, dtype=torch.float64).cpu()


@dataclass
class DownstreamSums:
    """Sums of next-token cross-entropy and KL divergence over the evaluated positions (SAELens's masks: a loss
    at position i predicts token i + 1 and counts when token i is evaluated; a KL at i counts when token i is)."""

    n_loss: int = 0
    ce_clean: float = 0.0
    ce_sae: float = 0.0
    ce_ablation: float = 0.0
    n_kl: int = 0
    kl_sae: float = 0.0
    kl_ablation: float = 0.0

    def add_clean(self, clean_logp: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor) -> None:
        """The clean run: ``clean_logp [b, seq, vocab]`` (log-softmax of its logits), ``tokens, keep [b, seq]``."""
        self.n_loss += int(keep[:, :-1].sum())
        self.n_kl += int(keep.sum())
        self.ce_clean += _loss_sum(clean_logp, tokens, keep[:, :-1])

    def add_spliced(self, name: str, logits: torch.Tensor, clean_logp: torch.Tensor, tokens: torch.Tensor,
                    keep: torch.Tensor) -> None:
        """A run with the hook replaced (``name``: ``sae`` or ``ablation``): its ``logits [b, seq, vocab]``."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        ce = _loss_sum(logp, tokens, keep[:, :-1])
        # KL(clean || new) = sum p_clean (log p_clean - log p_new), as SAELens's F.kl_div(new, p_clean)
        kl = (clean_logp.exp() * (clean_logp - logp)).sum(-1)  # [b, seq]
        setattr(self, f"ce_{name}", getattr(self, f"ce_{name}") + ce)
        setattr(self, f"kl_{name}", getattr(self, f"kl_{name}") + float(kl[keep].sum(dtype=torch.float64)))


def _loss_sum(logp: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor) -> float:
    """Sum of ``-log p(token i+1 | ..i)`` over positions ``i`` where ``keep [b, seq - 1]``."""
    nll = -logp[:, :-1].gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0]  # [b, seq - 1]
    return float(nll[keep].sum(dtype=torch.float64))
