"""Streaming per-feature statistics over a scan, in constant memory.

``activation_entropy`` is the entropy (nats) of a feature's activation mass over documents:
with ``m_d`` the summed activation in document ``d`` and ``M = sum_d m_d``,
``H = -sum_d (m_d / M) log(m_d / M) = log M - (sum_d m_d log m_d) / M``, so two running sums suffice.
Low entropy: the feature fires in few documents; high: spread over many (seed 002's filter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
import torch


@dataclass(frozen=True)
class ReconstructionSummary:
    n_tokens: int
    n_reconstructed: int
    """Tokens the explained variance was estimated on."""
    explained_variance: float
    l0: float
    dead_fraction: float


class FeatureStatsAccumulator:
    def __init__(self, d_sae: int, d_in: int, device: torch.device, threshold: float = 0.0) -> None:
        f64: dict[str, Any] = {"dtype": torch.float64, "device": device}
        self.threshold = threshold
        self.n_tokens = 0
        self.n_reconstructed = 0
        self.n_docs = 0
        self.n_active = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.act_max = torch.zeros(d_sae, dtype=torch.float32, device=device)
        self.mass = torch.zeros(d_sae, **f64)
        self.active_sum = torch.zeros(d_sae, **f64)
        self.mass_log_mass = torch.zeros(d_sae, **f64)
        self.n_docs_active = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.x_sum = torch.zeros(d_in, **f64)
        self.x_sq_sum = torch.zeros((), **f64)
        self.err_sq_sum = torch.zeros((), **f64)

    def add(self, feats: torch.Tensor, peak: torch.Tensor, doc_sum: torch.Tensor, n_valid: int,
            x: torch.Tensor, x_hat: torch.Tensor, n_active: torch.Tensor) -> None:
        """One batch: ``feats [b, seq, d_sae]`` with BOS and padding already zeroed, ``peak [b, d_sae]`` each
        document's maximum and ``doc_sum [b, d_sae]`` its sum over tokens, ``n_valid`` real tokens, and
        ``x``/``x_hat [n, d_in]`` hook activations and their reconstructions on a sample of those tokens
        (explained variance is estimated from the samples); ``n_active [d_sae]`` int32, each feature's tokens above
        the threshold in the batch (``document_peaks`` counts them)."""
        self.n_tokens += n_valid
        self.n_reconstructed += x.shape[0]
        self.n_docs += feats.shape[0]
        doc_mass = doc_sum.double().clamp_min_(0)  # [b, d_sae]
        self.n_active += n_active
        # mean activation is over active tokens: with a threshold, sub-threshold activation is left out
        self.active_sum += (doc_mass.sum(0) if self.threshold <= 0
                            else (feats * (feats > self.threshold)).sum(dim=(0, 1)).double())
        self.act_max = torch.maximum(self.act_max, peak.amax(dim=0).float())
        self.mass += doc_mass.sum(0)
        self.mass_log_mass += torch.where(doc_mass > 0, doc_mass * doc_mass.log(), 0).sum(0)
        self.n_docs_active += (peak > self.threshold).sum(0)
        xd = x.double()
        self.x_sum += xd.sum(0)
        self.x_sq_sum += xd.pow(2).sum()
        self.err_sq_sum += (xd - x_hat.double()).pow(2).sum()

    def summary(self) -> ReconstructionSummary:
        n = max(self.n_reconstructed, 1)
        total_var = self.x_sq_sum - self.x_sum.pow(2).sum() / n
        return ReconstructionSummary(
            n_tokens=self.n_tokens,
            n_reconstructed=self.n_reconstructed,
            explained_variance=float(1 - self.err_sq_sum / total_var) if total_var > 0 else float("nan"),
            l0=float(self.n_active.sum()) / max(self.n_tokens, 1),
            dead_fraction=float((self.n_active == 0).double().mean()),
        )

    def to_frame(self) -> pl.DataFrame:
        n_active = self.n_active.cpu()
        mass = self.mass.cpu()
        safe = mass.clamp_min(1e-300)
        entropy = torch.where(mass > 0, safe.log() - self.mass_log_mass.cpu() / safe, 0.0)
        mean = torch.where(n_active > 0, self.active_sum.cpu() / n_active.clamp_min(1), 0.0)
        return pl.DataFrame({
            "feature": pl.Series(range(n_active.shape[0]), dtype=pl.Int32),
            "n_tokens_active": pl.Series(n_active.numpy(), dtype=pl.Int64),
            "density": pl.Series((n_active.double() / max(self.n_tokens, 1)).numpy(), dtype=pl.Float64),
            "mean_activation": pl.Series(mean.numpy(), dtype=pl.Float32),
            "max_activation": pl.Series(self.act_max.cpu().numpy(), dtype=pl.Float32),
            "activation_entropy": pl.Series(entropy.clamp_min(0).numpy(), dtype=pl.Float32),
            "n_docs_active": pl.Series(self.n_docs_active.cpu().numpy(), dtype=pl.Int64),
        })
