"""Train an SAE on hook activations with SAELens's own trainer (``SAETrainer``).

The language model runs once, up to the hook, over packed contexts; activations are kept in memory, every BOS
position left out (position 0 and the separators between documents: attention sinks whose norm dwarfs the other
tokens', ~55k against ~3k at Gemma 3 270M's layer 6; Gemma Scope leaves them out too), and replayed in shuffled
mini-batches for as many passes as ``training_samples`` asks. Host memory is ``n_tokens x d_in x 4`` bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from sae_lens import SAE
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.saes.sae import SAEMetadata, TrainingSAE
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer

from sae_assets.core.common.language_model import LanguageModel
from sae_assets.core.common.precision import compute_dtype
from sae_assets.core.common.progress import Progress, Report
from sae_assets.core.sae.token_contexts import batches


@dataclass(frozen=True)
class SaeTrainingConfig:
    architecture: Literal["topk", "jumprelu"]
    """SAELens training SAE: TopK, or JumpReLU with a quadratic L0 penalty."""
    d_sae: int
    """Latents (SAE width)."""
    k: int
    """TopK: latents kept per token. JumpReLU: the target L0 of the quadratic sparsity loss."""
    training_samples: int
    """Activation vectors the trainer consumes (passes over the collected tokens x tokens)."""
    batch_size: int = 1024
    """Activation vectors per training step."""
    lr: float = 1e-3
    """Adam learning rate: warmed up, constant, then decayed linearly to a tenth of it."""
    seed: int = 0
    """Seeds the SAE's initialization and the shuffling of the activations."""
    precision: str = "float32"
    """Matmul precision of training: ``float32``, ``bfloat16`` (SAELens's autocast: bf16 products, float32 weights
    and optimizer) or ``auto`` (bf16 where the device multiplies it natively; :mod:`~sae_assets.core.common.
    precision`). The SAE is stored and evaluated in float32 either way."""


@torch.no_grad()
def collect_activations(
    lm: LanguageModel,
    contexts: torch.Tensor,
    hook_name: str,
    lm_batch_size: int,
    report: Report | None = None,
) -> torch.Tensor:
    """Hook activations of ``contexts [n_ctx, seq]`` at every position but BOS (position 0 and the separators
    :func:`~sae_assets.core.sae.token_contexts.pack_contexts` puts between documents): ``[n_kept, d_model]``.

    Stored as float32 on the CPU whatever the model's device and dtype.
    """
    n_ctx, seq = contexts.shape
    keep = contexts != lm.bos_token_id  # [n_ctx, seq]
    keep[:, 0] = False
    out = torch.empty((int(keep.sum()), lm.d_model), dtype=torch.float32)
    progress = Progress(f"activations at {hook_name}", n_ctx * seq, "tokens", report)
    row = 0
    for first, batch in zip(range(0, n_ctx, lm_batch_size), batches(contexts, lm_batch_size), strict=True):
        acts = lm.hook_activations(batch, hook_name)  # [b, seq, d_model]
        flat = acts[keep[first : first + batch.shape[0]].to(acts.device)].float().cpu()  # [kept, d_model]
        out[row : row + flat.shape[0]] = flat
        row += flat.shape[0]
        progress.advance(batch.numel())
    progress.finish()
    return out


def build_training_sae(cfg: SaeTrainingConfig, d_in: int, hook_name: str, model_name: str,
                       device: torch.device) -> TrainingSAE:
    torch.manual_seed(cfg.seed)
    metadata = SAEMetadata(hook_name=hook_name, model_name=model_name, prepend_bos=True)
    common = dict(d_in=d_in, d_sae=cfg.d_sae, device=str(device), dtype="float32",
                  normalize_activations="expected_average_only_in", metadata=metadata)
    if cfg.architecture == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=cfg.k, **common))
    if cfg.architecture == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(
            jumprelu_sparsity_loss_mode="quadratic", target_l0=float(cfg.k), **common))
    raise ValueError(f"architecture must be 'topk' or 'jumprelu', not {cfg.architecture!r}")


def _shuffled_batches(activations: torch.Tensor, batch_size: int, seed: int,
                      progress: Progress) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(activations.shape[0], generator=generator)
        for start in range(0, order.shape[0] - batch_size + 1, batch_size):
            progress.advance(batch_size)
            yield activations[order[start : start + batch_size]]


def train_sae(
    activations: torch.Tensor,
    cfg: SaeTrainingConfig,
    hook_name: str,
    model_name: str,
    device: torch.device,
    report: Report | None = None,
) -> SAE:
    """Train on ``activations [n_tokens, d_in]`` and return the inference SAE (norm scaling folded in)."""
    n_tokens, d_in = activations.shape
    if n_tokens < cfg.batch_size:
        raise ValueError(f"{n_tokens} activation vectors are fewer than one batch of {cfg.batch_size}.")
    sae = build_training_sae(cfg, d_in, hook_name, model_name, device)
    progress = Progress("SAE training", cfg.training_samples, "samples", report)
    trainer = SAETrainer(
        cfg=SAETrainerConfig(
            total_training_samples=cfg.training_samples,
            train_batch_size_samples=cfg.batch_size,
            lr=cfg.lr,
            lr_end=cfg.lr / 10,
            lr_warm_up_steps=max(1, cfg.training_samples // cfg.batch_size // 20),
            lr_scheduler_name="constant",
            lr_decay_steps=max(1, cfg.training_samples // cfg.batch_size // 5),
            device=str(device),
            dead_feature_window=max(50, cfg.training_samples // cfg.batch_size // 4),
            feature_sampling_window=max(100, cfg.training_samples // cfg.batch_size // 2),
            autocast=compute_dtype(cfg.precision, device) == torch.bfloat16,
        ),
        sae=sae,
        data_provider=_shuffled_batches(activations, cfg.batch_size, cfg.seed, progress),
    )
    # SAELens's "expected_average_only_in" scaling, computed over all tokens rather than estimated
    # from batches, and b_dec started at the (scaled) mean: residual streams carry a large mean
    # offset, and from b_dec = 0 a TopK SAE spends its k latents on it and most latents die.
    scale = d_in**0.5 / activations.norm(dim=1).mean().item()
    trainer.activation_scaler.scaling_factor = scale
    with torch.no_grad():
        sae.b_dec.copy_(activations.mean(0).to(sae.b_dec.device) * scale)
    trained = trainer.fit()
    progress.finish()
    return _to_inference_sae(trained)


def _to_inference_sae(trained: TrainingSAE) -> SAE:
    """The SAELens inference SAE with the trained weights (what ``save_inference_model`` stores)."""
    state = trained.state_dict()
    trained.process_state_dict_for_saving_inference(state)
    inference = SAE.from_dict(trained.cfg.get_inference_sae_cfg_dict())
    inference.load_state_dict(state)
    return inference
