"""Optimized prompts, continuous variant (the seed's SAE inverse embeddings): optimize free input embeddings with
Adam to raise a feature's activation (or its surrogate while off, see
``FeatureObjective.feature_values``), project each position to its nearest allowed token embedding (cosine
or L2), and keep the projected prompt with the highest *real* activation (a clean forward of token ids; the
relaxed activation of free embeddings is never reported). ``fluency_weight`` only ranks projected prompts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from sae_assets.core.common.language_model import LanguageModel
from sae_assets.core.common.progress import Progress
from sae_assets.core.prompts.config import OptimizedPrompt, PromptOptConfig
from sae_assets.core.prompts.objective import FeatureObjective, Report, better


def embedding_scale(obj: FeatureObjective, tokens: torch.Tensor) -> float:
    """How the ``hook_embed`` output compares with ``W_E`` rows (1 for HookedTransformer and TransformerBridge
    alike; a model that scales its embeddings inside the hook gets that factor)."""
    captured: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
        captured["emb"] = act.detach()
        return act

    with torch.inference_mode():
        obj.run(obj.with_bos(tokens[None]), keep, logits=False)
    emb = captured["emb"][0, obj.n_bos:].float()  # [length, d_model]
    rows = obj.W_E[tokens].float()
    return float((emb * rows).sum() / (rows * rows).sum().clamp_min(1e-12))


def project(embeddings: torch.Tensor, W_E: torch.Tensor, W_norm: torch.Tensor, allowed: torch.Tensor,
            how: str) -> torch.Tensor:
    """Nearest allowed token ``[length]`` of each row of ``embeddings [length, d_model]`` (``W_E [vocab, d_model]``
    with row norms ``W_norm [vocab]``)."""
    dots = embeddings.to(W_E.dtype) @ W_E.T  # [length, vocab]
    if how == "cosine":
        score = dots.float() / W_norm.clamp_min(1e-12)
    else:  # -|e - w|^2 up to the row constant |e|^2
        score = 2 * dots.float() - W_norm.square()
    return score.masked_fill(~allowed, -math.inf).argmax(dim=1)


def optimize_continuous(model: LanguageModel, hook_name: str, sae: Any, feature: int, cfg: PromptOptConfig, *,
                        allowed_tokens: torch.Tensor | None = None, init_tokens: Sequence[int] | None = None,
                        report: Report | None = None) -> OptimizedPrompt:
    """Adam on the ``[length, d_model]`` input embeddings (BOS kept), for ``cfg.continuous_steps`` steps.

    Every step projects the embeddings to tokens; a new projection is scored with a forward of its token ids and
    kept when it beats the best so far, so ``trajectory`` never decreases. Early stop on a plateau of that
    best. ``allowed_tokens`` restricts the projection (default: all but the tokenizer's special tokens)."""
    start = time.perf_counter()
    obj = FeatureObjective(model, hook_name, sae, feature, cfg, allowed_tokens, report)
    tokens = obj.random_prompt() if init_tokens is None else torch.tensor(list(init_tokens), device=obj.device)
    if tokens.shape != (cfg.length,):
        raise ValueError(f"init_tokens has {tokens.shape[0]} tokens; length is {cfg.length}.")
    scale = embedding_scale(obj, tokens)
    W_norm = torch.linalg.vector_norm(obj.W_E, dim=1, dtype=torch.float32)  # [vocab], no float copy of W_E
    embeddings = (obj.W_E[tokens].float() * scale).clone().requires_grad_()  # [length, d_model]
    optimizer = torch.optim.Adam([embeddings], lr=cfg.lr * float(W_norm.mean()) * abs(scale))

    def embed(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return torch.cat([act[:, : obj.n_bos], embeddings[None].to(act.dtype)], dim=1)

    act, best = obj.rank(tokens)
    best_tokens, seen = tokens, {tuple(tokens.tolist())}
    trajectory = [float(act[0])]
    progress = Progress(f"continuous prompt for feature {feature}", cfg.continuous_steps, "steps", report,
                        cfg.report_every_s)
    stale, step, stopped = 0, 0, False
    for step in range(1, cfg.continuous_steps + 1):
        with torch.enable_grad():
            acts, _ = obj.run(obj.with_bos(best_tokens[None]), embed, logits=False)
            objective = obj.reduce(obj.feature_values(acts)[1], for_gradient=True)[0]
            (grad,) = torch.autograd.grad(-objective, embeddings)
        embeddings.grad = grad
        optimizer.step()
        with torch.no_grad():
            projected = project(embeddings / scale, obj.W_E, W_norm, obj.allowed, cfg.projection)
        stale += 1
        if tuple(projected.tolist()) not in seen:
            seen.add(tuple(projected.tolist()))
            p_act, candidate = obj.rank(projected)
            if better(candidate, best):
                stale = 0 if better(candidate, best, cfg.min_improvement) else stale
                best_tokens, best, act = projected, candidate, p_act
        trajectory.append(float(act[0]))
        progress.what = f"continuous prompt for feature {feature} (best {trajectory[-1]:.3g})"
        progress.advance(1)
        if stale >= cfg.patience:
            stopped = step < cfg.continuous_steps
            break
    progress.finish()
    relaxed = float(objective.detach()) if step else math.nan
    return obj.result("continuous", best_tokens, step, trajectory, stopped, start, relaxed_objective=relaxed,
                      embedding_scale=scale)

