"""Configuration and result of prompt optimization (:mod:`sae_assets.core.prompts.optimize`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sae_assets.core.common.precision import PRECISIONS


@dataclass(frozen=True)
class PromptOptConfig:
    length: int = 8
    """Prompt tokens to optimize (BOS, when prepended, is not counted)."""
    max_steps: int = 100
    """Discrete: optimization steps (one gradient + one batched candidate evaluation each)."""
    top_k: int = 64
    """Discrete: candidate tokens per position, by largest gradient of the objective (GCG)."""
    batch_size: int = 128
    """Discrete: single-token swaps evaluated per step (halved automatically on CUDA out-of-memory)."""
    fluency_weight: float = 0.0
    """EPO fluency penalty: objective = activation - fluency_weight * (mean next-token CE of the prompt).
    0 disables it, and the forward stops at the hook's layer."""
    position: Literal["last", "any"] = "last"
    """``last``: the activation at the last prompt token; ``any``: the maximum over prompt tokens."""
    patience: int = 20
    """Stop early after this many steps without an improvement larger than ``min_improvement``."""
    restarts: int = 2
    """Discrete: when the search plateaus (``patience``) with steps left, start again from a new random prompt
    up to this many times, keeping the best prompt found (GCG's single swaps get stuck in local optima); 0: one
    search."""
    min_improvement: float = 1e-4
    """Smallest gain of the objective that resets ``patience``."""
    seed: int = 0
    """Seeds the random initial prompt and the candidate sampling (combined with the feature index)."""
    lr: float = 0.05
    """Continuous: Adam learning rate on the input embeddings, relative to the mean token-embedding norm."""
    continuous_steps: int = 200
    """Continuous: Adam steps."""
    projection: Literal["cosine", "l2"] = "cosine"
    """Continuous: nearest token embedding by ``cosine`` similarity or ``l2`` distance."""
    report_every_s: float = 10.0
    """Seconds between progress messages."""
    precision: str = "float32"
    """Matmul precision of the search's forwards and gradients: ``float32``, ``bfloat16`` (autocast) or ``auto``
    (bf16 where the device multiplies it natively; :mod:`~sae_assets.core.common.precision`). The activation and
    cross-entropy reported for the prompt found always come from a float32 forward."""

    def __post_init__(self) -> None:
        checks = [(self.length >= 1, f"length must be >= 1 (got {self.length}): a prompt needs a token"),
                  (self.max_steps >= 0, f"max_steps must be >= 0 (got {self.max_steps})"),
                  (self.top_k >= 1, f"top_k must be >= 1 (got {self.top_k})"),
                  (self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})"),
                  (self.fluency_weight >= 0, f"fluency_weight must be >= 0 (got {self.fluency_weight})"),
                  (self.position in ("last", "any"), f"position must be 'last' or 'any' (got {self.position!r})"),
                  (self.patience >= 1, f"patience must be >= 1 (got {self.patience})"),
                  (self.restarts >= 0, f"restarts must be >= 0 (got {self.restarts})"),
                  (self.min_improvement >= 0, f"min_improvement must be >= 0 (got {self.min_improvement})"),
                  (self.lr > 0, f"lr must be > 0 (got {self.lr})"),
                  (self.continuous_steps >= 0, f"continuous_steps must be >= 0 (got {self.continuous_steps})"),
                  (self.projection in ("cosine", "l2"), f"projection must be 'cosine' or 'l2' "
                                                        f"(got {self.projection!r})"),
                  (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)} "
                                                 f"(got {self.precision!r})")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"PromptOptConfig: {message}.")


@dataclass
class OptimizedPrompt:
    feature: int
    method: str
    """``discrete`` or ``continuous``."""
    token_ids: list[int]
    """The optimized prompt, BOS excluded."""
    activation: float
    """The feature's activation (``position``-reduced) in a clean forward of ``[BOS] + token_ids``."""
    cross_entropy: float
    """Mean next-token cross-entropy (nats) of the prompt tokens under the model (full forward); NaN for a
    1-token prompt without BOS."""
    steps: int
    """Optimization steps run (fewer than configured after an early stop)."""
    trajectory: list[float]
    """The best activation so far, before the first step and after each step (``steps + 1`` values); never
    decreasing when ``fluency_weight`` is 0."""
    position_activations: list[float]
    """The feature's activation at each prompt token of the final prompt (``length`` values)."""
    bos_token_id: int | None = None
    token_strings: list[str] | None = None
    """Each token decoded alone, when the model has a tokenizer."""
    stopped_early: bool = False
    seconds: float = 0.0
    batch_size: int = 0
    """Candidate batch at the end (smaller than configured after an out-of-memory back-off)."""
    extra: dict[str, Any] = field(default_factory=dict)
