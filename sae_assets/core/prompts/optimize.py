"""Optimized prompts: the token sequence that most activates one SAE feature (seed: SAE inverse embeddings).

Discrete (GCG / EPO, Thompson et al. 2024, "Fluent dreaming for language models"): the prompt is a one-hot
``[length, vocab]`` times the embedding matrix; the gradient of ``activation - fluency_weight * CE`` with
respect to the one-hot proposes ``top_k`` tokens per position, ``batch_size`` single-token swaps are scored
in one batched forward, and the best is kept when it beats the incumbent. ``CE`` is the model's own mean
next-token cross-entropy of the prompt (EPO's fluency term); with ``fluency_weight = 0`` every forward stops
at the hook's layer. The continuous variant lives in :mod:`sae_assets.core.prompts.continuous`.

The objective is the real ``sae.encode`` activation where the feature fires; where it does not (a TopK or
JumpReLU latent then has zero gradient) a surrogate built from the SAE's pre-activations takes its place
(:meth:`~sae_assets.core.prompts.objective.FeatureObjective.feature_values`), so an active prompt always ranks
above an inactive one. Results report the real activation of a clean forward. A BOS token is prepended
(never optimized) when the model's tokenizer has one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sae_assets.core.common.language_model import LanguageModel
from sae_assets.core.common.progress import Progress
from sae_assets.core.prompts.config import OptimizedPrompt, PromptOptConfig
from sae_assets.core.prompts.continuous import optimize_continuous
from sae_assets.core.prompts.objective import FeatureObjective, Report, better, check_feature

__all__ = ["OptimizedPrompt", "PromptOptConfig", "optimize_continuous", "optimize_discrete", "optimize_features"]


def optimize_discrete(model: LanguageModel, hook_name: str, sae: Any, feature: int, cfg: PromptOptConfig, *,
                      allowed_tokens: torch.Tensor | None = None, init_tokens: Sequence[int] | None = None,
                      report: Report | None = None) -> OptimizedPrompt:
    """GCG / EPO search for the ``cfg.length`` tokens that maximize ``feature`` at ``hook_name``.

    ``allowed_tokens``: ``[vocab]`` bool mask of candidate tokens (default: all but the tokenizer's special
    tokens); ``init_tokens``: the starting prompt (default: random allowed tokens)."""
    start = time.perf_counter()
    obj = FeatureObjective(model, hook_name, sae, feature, cfg, allowed_tokens, report)
    tokens = obj.random_prompt() if init_tokens is None else torch.tensor(list(init_tokens), device=obj.device)
    if tokens.shape != (cfg.length,):
        raise ValueError(f"init_tokens has {tokens.shape[0]} tokens; length is {cfg.length}.")
    act, current = obj.rank(tokens)
    best_tokens, best_key, best_act = tokens, current, act
    trajectory = [float(act[0])]
    progress = Progress(f"prompt for feature {feature}", cfg.max_steps, "steps", report, cfg.report_every_s)
    k = min(cfg.top_k, int(obj.allowed.sum()))
    stale, step, stopped, restarts = 0, 0, False, 0
    top, top_of = torch.empty(0), None  # the candidate tokens of the gradient of prompt top_of
    for step in range(1, cfg.max_steps + 1):
        if top_of is None or not torch.equal(top_of, tokens):  # a kept prompt's gradient is the same: not redone
            grad = obj.gradient(tokens).masked_fill(~obj.allowed, -math.inf)  # [length, vocab]
            top, top_of = grad.topk(k, dim=1).indices, tokens  # [length, k]
        pos = torch.randint(cfg.length, (cfg.batch_size,), generator=obj.generator).to(obj.device)
        pick = torch.randint(k, (cfg.batch_size,), generator=obj.generator).to(obj.device)
        cands = tokens.repeat(cfg.batch_size, 1)  # [batch, length]: one swap each
        cands[torch.arange(cfg.batch_size, device=obj.device), pos] = top[pos, pick]
        cands = torch.unique(cands, dim=0)
        cands = cands[(cands != tokens).any(dim=1)]
        if cands.shape[0]:
            c_act, c_pre, c_ce = obj.score(cands)
            c_active, c_value = obj.key(c_act, c_pre, c_ce)
            c_value = c_value.masked_fill(c_active != c_active.any(), -math.inf)  # active ones first
            best = int(c_value.argmax())
            candidate = (bool(c_active[best]), float(c_value[best]))
            if better(candidate, current):
                stale = 0 if better(candidate, current, cfg.min_improvement) else stale + 1
                tokens, current, act = cands[best], candidate, c_act[best: best + 1]
            else:
                stale += 1
        else:
            stale += 1
        if better(current, best_key):
            best_tokens, best_key, best_act = tokens, current, act
        trajectory.append(float(best_act[0]))
        progress.what = f"prompt for feature {feature} (best {trajectory[-1]:.3g})"
        progress.advance(1)
        if stale >= cfg.patience and restarts < cfg.restarts and step < cfg.max_steps:
            restarts, stale = restarts + 1, 0  # a local optimum: start again from a random prompt, keep the best
            tokens = obj.random_prompt()
            act, current = obj.rank(tokens)
        elif stale >= cfg.patience:
            stopped = step < cfg.max_steps
            break
    progress.finish()
    return obj.result("discrete", best_tokens, step, trajectory, stopped, start, restarts=restarts)


def optimize_features(model: LanguageModel, hook_name: str, sae: Any, features: Sequence[int], cfg: PromptOptConfig,
                      *, methods: Sequence[str] = ("discrete",), allowed_tokens: torch.Tensor | None = None,
                      init_prompts: Mapping[int, Sequence[int]] | None = None,
                      report: Report | None = None) -> list[OptimizedPrompt]:
    """One :class:`OptimizedPrompt` per feature and method (``discrete``, ``continuous``), feature-major;
    ``init_prompts``: feature -> where its discrete search starts (e.g. :func:`~sae_assets.core.prompts.seeds.
    example_prompt`; default and missing features: random tokens)."""
    for feature in features:
        check_feature(sae, feature)
    run = {"discrete": optimize_discrete, "continuous": optimize_continuous}
    unknown = [m for m in methods if m not in run]
    if unknown:
        raise ValueError(f"Unknown prompt optimization method(s) {unknown}: use 'discrete' or 'continuous'.")
    init = init_prompts or {}
    return [optimize_discrete(model, hook_name, sae, f, cfg, allowed_tokens=allowed_tokens,
                              init_tokens=init.get(f), report=report) if m == "discrete"
            else run[m](model, hook_name, sae, f, cfg, allowed_tokens=allowed_tokens, report=report)
            for f in features for m in methods]
