"""One platform-trained SAE: activations collected over packed contexts, the SAE trained on the first
``training_tokens`` of them and evaluated on the rest; and the one-row ``trained_sae`` table that records it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from sae_lens import SAE

from sae_assets.core.common.language_model import LanguageModel
from sae_assets.core.common.progress import Report
from sae_assets.core.sae.metrics import SaeMetrics, evaluate_sae
from sae_assets.core.sae.training import SaeTrainingConfig, collect_activations, train_sae


@dataclass(frozen=True)
class TrainingRun:
    """The trained SAE, its metrics on the held-out activations, and the seconds collecting and training took."""

    sae: SAE
    metrics: SaeMetrics
    collect_seconds: float
    train_seconds: float


def train_on_contexts(lm: LanguageModel, contexts: torch.Tensor, hook_name: str, model_name: str,
                      training: SaeTrainingConfig, training_tokens: int, lm_batch_size: int, device: torch.device,
                      report: Report | None = None) -> TrainingRun:
    """Collect ``hook_name`` activations of ``contexts``; train on the first ``training_tokens``, evaluate on the
    rest (SAELens's trainer; ``model_name`` goes in the SAE's metadata)."""
    t0 = time.perf_counter()
    acts = collect_activations(lm, contexts, hook_name, lm_batch_size, report)
    collect_s = time.perf_counter() - t0
    train_acts, eval_acts = acts[:training_tokens], acts[training_tokens:]
    t0 = time.perf_counter()
    sae = train_sae(train_acts, training, hook_name, model_name, device, report)
    train_s = time.perf_counter() - t0
    return TrainingRun(sae, evaluate_sae(sae, eval_acts), collect_s, train_s)


def trained_sae_row(path: Path, hook_name: str, training: SaeTrainingConfig, training_tokens: int, corpus: str,
                    run: TrainingRun) -> pl.DataFrame:
    """The ``trained_sae`` row: where the SAE is stored, its shape and training budget, and its metrics."""
    return pl.DataFrame({
        "sae_path": [str(path)], "hook_name": [hook_name], "architecture": [training.architecture],
        "d_in": [int(run.sae.cfg.d_in)], "d_sae": [training.d_sae], "k": [training.k],
        "training_tokens": [training_tokens], "training_samples": [training.training_samples],
        "corpus": [corpus], **{name: [value] for name, value in run.metrics.as_dict().items()},
    })
