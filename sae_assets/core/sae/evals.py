"""How good an SAE is, with SAELens's definitions (``sae_lens.evals``): reconstruction, sparsity, and what the
language model loses when the SAE is spliced in at its hook.

Per batch of contexts the model runs three times: clean, with the hook's activations replaced by the SAE's
reconstruction, and with the hook zero-ablated. The reconstruction and sparsity sums are taken inside the
splice (the clean activations are the SAE's input there), so one pass gives every metric; SAELens's
``get_sparsity_and_variance_metrics`` and ``get_downstream_reconstruction_metrics`` take a fourth forward per
batch, keep every token's values until the end and read tokens from an ``ActivationsStore``. The definitions are
theirs, and tests/core/sae/test_evals.py checks the numbers against those functions on a small model (1e-4).

Special tokens (BOS, EOS, padding: ``ignore_tokens``) are left out as SAELens leaves them out: the SAE keeps the
clean activation at such a position, its latents and losses are not counted, and a next-token loss counts when
the token it is predicted from is evaluated. Zero ablation zeroes every position, as SAELens's does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sae_assets.core.common.language_model import LanguageModel
from sae_assets.core.common.progress import Progress
from sae_assets.core.sae.eval_sums import DownstreamSums, ReconstructionSums

DENSE_DENSITY = 0.1
"""A latent active on more than this fraction of tokens is dense."""
DENSITY_EDGES = tuple(float(e) for e in np.arange(-8.0, 0.01, 0.25))
"""log10 feature-density bin edges of the histogram; dead latents (density 0) are counted apart."""
LOGIT_COPIES = 5
"""float32 ``[rows, seq, vocab]`` tensors alive at once: clean log-probs, a run's logits, its log-probs, the KL's
product and the clean probabilities."""


@dataclass(frozen=True)
class SaeEvals:
    """SAELens's core metrics of one SAE on the evaluated tokens (names as ``sae_lens.evals`` gives them)."""

    n_tokens: int
    """Evaluated tokens (special tokens left out)."""
    explained_variance: float
    """1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2)."""
    mse: float
    """E||x - x_hat||^2: per-token squared error summed over d_in (SAELens's, not per element)."""
    cossim: float
    """Mean cosine of x_hat to x."""
    l2_norm_in: float
    l2_norm_out: float
    l2_ratio: float
    """Mean ||x_hat|| / ||x||: below 1 is shrinkage."""
    relative_reconstruction_bias: float
    """E||x_hat||^2 / E<x, x_hat> over all tokens (SAELens: per batch, then averaged; equal for one batch)."""
    l1: float
    """Mean sum of |latents| per token."""
    l0: float
    """Mean active latents per token."""
    l0_quantiles: dict[str, float]
    """``p10``, ``p50``, ``p90``, ``max`` of the tokens' L0."""
    dead_fraction: float
    """Latents active on no evaluated token."""
    dense_fraction: float
    """Latents active on more than :data:`DENSE_DENSITY` of the tokens."""
    density_histogram: list[int]
    """Live latents per log10-density bin of :data:`DENSITY_EDGES`."""
    feature_density: torch.Tensor
    """``[d_sae]`` fraction of evaluated tokens each latent was active on."""
    ce_loss_without_sae: float
    ce_loss_with_sae: float
    ce_loss_with_ablation: float
    ce_loss_score: float
    """(CE ablation - CE SAE) / (CE ablation - CE clean): the fraction of loss recovered; 1 perfect, 0 as bad as
    ablating the hook, negative worse than that."""
    delta_lm_loss: float
    """CE with the SAE - CE clean (nats per token; Gemma Scope's "delta LM loss")."""
    kl_div_with_sae: float
    """Mean KL(clean || with SAE) of the next-token distributions."""
    kl_div_with_ablation: float
    kl_div_score: float
    """(KL ablation - KL SAE) / KL ablation."""

    def scalars(self) -> dict[str, float | int]:
        """Every scalar metric by its column name."""
        skip = {"l0_quantiles", "density_histogram", "feature_density"}
        values: dict[str, float | int] = {}
        for name, value in self.__dict__.items():
            if name not in skip:
                values[name] = value
            if name == "l0":  # its spread next to it
                values.update({f"l0_{q}": v for q, v in self.l0_quantiles.items()})
        return values


def rows_per_batch(context_size: int, vocab: int, memory_bytes: int, max_rows: int) -> int:
    """Contexts per forward so the logits' copies (:data:`LOGIT_COPIES`) fit in ``memory_bytes``; at least 1."""
    return max(1, min(max_rows, memory_bytes // (LOGIT_COPIES * 4 * context_size * vocab)))


@torch.inference_mode()
def evaluate_spliced(lm: LanguageModel, sae: Any, hook_name: str, contexts: torch.Tensor, batch_rows: int,
                     ignore_tokens: list[int], report: Callable[[str], None] | None = None) -> SaeEvals:
    """SAELens's metrics of ``sae`` at ``hook_name`` on ``contexts [n, seq]`` (int64 token ids), ``batch_rows``
    contexts per forward; progress through ``report``."""
    lm.check_hook(hook_name)
    if int(sae.cfg.d_in) != lm.d_model:
        raise ValueError(f"The SAE reads {sae.cfg.d_in}-dimensional activations but {hook_name} of {lm.name} has "
                         f"{lm.d_model}: it belongs to another model or hook.")
    recon, down = ReconstructionSums(int(sae.cfg.d_sae)), DownstreamSums()
    ignore = torch.tensor(sorted(set(ignore_tokens)), dtype=torch.long, device=lm.device)
    sae_device = next(sae.parameters()).device
    progress = Progress("SAE evals", int(contexts.numel()), "tokens", report)
    for start in range(0, contexts.shape[0], batch_rows):
        tokens = contexts[start : start + batch_rows].to(lm.device)
        keep = ~torch.isin(tokens, ignore)  # [b, seq]

        clean_logp = torch.log_softmax(lm.model(tokens, return_type="logits").float(), dim=-1)  # [b, seq, vocab]
        down.add_clean(clean_logp, tokens, keep)
        for name, hook_fn in (("sae", _splice(sae, sae_device, keep, recon)), ("ablation", _zero)):
            logits = lm.model.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook_name, hook_fn)])
            down.add_spliced(name, logits, clean_logp, tokens, keep)
            del logits
        del clean_logp
        progress.advance(int(tokens.numel()))
    progress.finish()
    if recon.n_tokens == 0 or down.n_loss == 0:
        raise ValueError("No token was evaluated: every token of the contexts is a special token.")
    return _metrics(recon, down)


def _splice(sae: Any, sae_device: torch.device, keep: torch.Tensor,
            recon: ReconstructionSums) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """The hook that replaces the kept positions' activations by the SAE's reconstruction, adding to ``recon``."""

    def splice(act: torch.Tensor, hook: Any) -> torch.Tensor:  # act [b, seq, d_in]; keep [b, seq]
        x = act[keep]  # [n, d_in]
        latents = sae.encode(x.to(sae_device))  # [n, d_sae]
        x_hat = sae.decode(latents)  # [n, d_in]
        recon.add(x, x_hat, latents.to_dense() if latents.is_sparse else latents)
        out = act.clone()
        out[keep] = x_hat.to(device=act.device, dtype=act.dtype)
        return out

    return splice


def _zero(act: torch.Tensor, hook: Any) -> torch.Tensor:
    return torch.zeros_like(act)


def _metrics(recon: ReconstructionSums, down: DownstreamSums) -> SaeEvals:
    n = recon.n_tokens
    assert recon.sum_x is not None
    variance = recon.sum_sq_norm / n - float((recon.sum_x / n).pow(2).sum())
    mse = recon.sum_sq_residual / n
    density = recon.firing / n
    live = density[density > 0]
    ce_clean, ce_sae, ce_abl = (down.ce_clean / down.n_loss, down.ce_sae / down.n_loss,
                                down.ce_ablation / down.n_loss)
    kl_sae, kl_abl = down.kl_sae / down.n_kl, down.kl_ablation / down.n_kl
    return SaeEvals(
        n_tokens=n,
        explained_variance=(1.0 - mse / variance) if variance >= 1e-10 else float(mse < 1e-10),
        mse=mse,
        cossim=recon.sum_cossim / n,
        l2_norm_in=recon.sum_norm_in / n,
        l2_norm_out=recon.sum_norm_out / n,
        l2_ratio=recon.sum_l2_ratio / n,
        relative_reconstruction_bias=recon.sum_x_hat_sq / recon.sum_x_dot_x_hat,
        l1=recon.sum_l1 / n,
        l0=float((recon.l0_counts * torch.arange(recon.l0_counts.shape[0])).sum()) / n,
        l0_quantiles=_count_quantiles(recon.l0_counts),
        dead_fraction=float((density == 0).double().mean()),
        dense_fraction=float((density > DENSE_DENSITY).double().mean()),
        density_histogram=np.histogram(np.log10(live.numpy()), bins=np.array(DENSITY_EDGES))[0].tolist(),
        feature_density=density.float(),
        ce_loss_without_sae=ce_clean, ce_loss_with_sae=ce_sae, ce_loss_with_ablation=ce_abl,
        ce_loss_score=(ce_abl - ce_sae) / (ce_abl - ce_clean),
        delta_lm_loss=ce_sae - ce_clean,
        kl_div_with_sae=kl_sae, kl_div_with_ablation=kl_abl,
        kl_div_score=(kl_abl - kl_sae) / kl_abl,
    )


def _count_quantiles(counts: torch.Tensor) -> dict[str, float]:
    """Quantiles of values ``0..len(counts)-1`` given how often each occurs (the lower value at a boundary)."""
    cumulative = counts.cumsum(0).double() / counts.sum()
    at = {"p10": 0.1, "p50": 0.5, "p90": 0.9}
    out = {name: float(torch.searchsorted(cumulative, torch.tensor([q], dtype=torch.float64))[0]) for name, q in
           at.items()}
    out["max"] = float(torch.nonzero(counts)[-1, 0])
    return out
