"""Optimized prompts: the token sequence that most activates one SAE feature (seed: SAE inverse embeddings).

Discrete (GCG / EPO, Thompson et al. 2024, "Fluent dreaming for language models"): the prompt is a one-hot
``[length, vocab]`` times the embedding matrix; the gradient of ``activation - fluency_weight * CE`` with
respect to the one-hot proposes ``top_k`` tokens per position, ``batch_size`` single-token swaps are scored
in one batched forward, and the best is kept when it beats the incumbent. ``CE`` is the model's own mean
next-token cross-entropy of the prompt (EPO's fluency term); with ``fluency_weight = 0`` every forward stops
at the hook's layer. The continuous variant lives in :mod:`sae_assets.core.prompt_opt_continuous`.

The objective is the real ``sae.encode`` activation where the feature fires; where it does not (a TopK or
JumpReLU latent then has zero gradient) a surrogate built from the SAE's pre-activations takes its place (see
``FeatureObjective.feature_values``), so an active prompt always ranks above an inactive one. Results report
the real activation of a clean forward. A BOS token is prepended (never
optimized) when the model's tokenizer has one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sae_assets.core.language_model import LanguageModel, hook_layer
from sae_assets.core.progress import Progress

log = logging.getLogger(__name__)
Report = Callable[[str], None]
Scores = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # activation, surrogate, CE: each [batch]


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
    position: str = "last"
    """``last``: the activation at the last prompt token; ``any``: the maximum over prompt tokens."""
    patience: int = 20
    """Stop early after this many steps without an improvement larger than ``min_improvement``."""
    min_improvement: float = 1e-4
    """Smallest gain of the objective that resets ``patience``."""
    seed: int = 0
    """Seeds the random initial prompt and the candidate sampling (combined with the feature index)."""
    lr: float = 0.05
    """Continuous: Adam learning rate on the input embeddings, relative to the mean token-embedding norm."""
    continuous_steps: int = 200
    """Continuous: Adam steps."""
    projection: str = "cosine"
    """Continuous: nearest token embedding by ``cosine`` similarity or ``l2`` distance."""
    report_every_s: float = 10.0
    """Seconds between progress messages."""

    def __post_init__(self) -> None:
        checks = [(self.length >= 1, f"length must be >= 1 (got {self.length}): a prompt needs a token"),
                  (self.max_steps >= 0, f"max_steps must be >= 0 (got {self.max_steps})"),
                  (self.top_k >= 1, f"top_k must be >= 1 (got {self.top_k})"),
                  (self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})"),
                  (self.fluency_weight >= 0, f"fluency_weight must be >= 0 (got {self.fluency_weight})"),
                  (self.position in ("last", "any"), f"position must be 'last' or 'any' (got {self.position!r})"),
                  (self.patience >= 1, f"patience must be >= 1 (got {self.patience})"),
                  (self.min_improvement >= 0, f"min_improvement must be >= 0 (got {self.min_improvement})"),
                  (self.lr > 0, f"lr must be > 0 (got {self.lr})"),
                  (self.continuous_steps >= 0, f"continuous_steps must be >= 0 (got {self.continuous_steps})"),
                  (self.projection in ("cosine", "l2"), f"projection must be 'cosine' or 'l2' "
                                                        f"(got {self.projection!r})")]
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
    """The incumbent's activation before the first step and after each step (``steps + 1`` values); never
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


def embedding_matrix(model: LanguageModel) -> torch.Tensor:
    """The token embedding matrix ``[vocab, d_model]`` of a HookedTransformer or TransformerBridge."""
    tl = model.model
    for get in (lambda: tl.W_E, lambda: tl.embed.W_E, lambda: tl.embed.weight,
                lambda: tl.embed.original_component.weight):
        try:
            weight = get()
        except AttributeError:
            continue
        if isinstance(weight, torch.Tensor) and weight.ndim == 2:
            return weight.detach()
    raise ValueError(f"Cannot find the token embedding matrix of {model.name} (W_E or embed.weight).")


def default_allowed_tokens(model: LanguageModel) -> torch.Tensor:
    """``[vocab]`` bool: every embedding row, less the tokenizer's special tokens and rows past its vocab."""
    allowed = torch.ones(embedding_matrix(model).shape[0], dtype=torch.bool)
    if model.tokenizer is not None:
        allowed[len(model.tokenizer):] = False
        allowed[[i for i in model.tokenizer.all_special_ids if i < allowed.shape[0]]] = False
    return allowed


def check_feature(sae: Any, feature: int) -> None:
    d_sae = int(sae.cfg.d_sae)
    if not 0 <= feature < d_sae:
        raise ValueError(f"Feature {feature} is outside the SAE: d_sae is {d_sae} (features 0..{d_sae - 1}).")


def sae_encode(sae: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents and pre-activations, both ``[..., d_sae]``, from one ``sae.encode(x [..., d_in])``.

    The pre-activation is what SAELens passes through ``hook_sae_acts_pre`` (after ``b_dec`` is subtracted
    when ``apply_b_dec_to_input``, and any decoder-norm rescaling); an SAE without it uses its latents."""
    hook = getattr(sae, "hook_sae_acts_pre", None)
    if not isinstance(hook, torch.nn.Module):
        latents = sae.encode(x)
        return latents, latents
    captured: list[torch.Tensor] = []
    handle = hook.register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        latents = sae.encode(x)
    finally:
        handle.remove()
    return latents, captured[-1] if captured else latents


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class FeatureObjective:
    """Forwards of ``model`` for one feature: differentiable through the embeddings, or batched (no grad)."""

    def __init__(self, model: LanguageModel, hook_name: str, sae: Any, feature: int, cfg: PromptOptConfig,
                 allowed_tokens: torch.Tensor | None, report: Report | None) -> None:
        check_feature(sae, feature)
        model.check_hook(hook_name)
        self.model, self.hook_name, self.sae, self.feature, self.cfg = model, hook_name, sae, feature, cfg
        self.layer = hook_layer(hook_name)
        self.W_E = embedding_matrix(model)  # [vocab, d_model]
        self.device = self.W_E.device
        self.sae_param = next(sae.parameters(), None) if hasattr(sae, "parameters") else None
        allowed = default_allowed_tokens(model) if allowed_tokens is None else allowed_tokens.bool().cpu()
        if allowed.shape != (self.W_E.shape[0],) or not allowed.any():
            raise ValueError(f"allowed_tokens must be a [{self.W_E.shape[0]}] bool mask with a True entry.")
        self.allowed = allowed.to(self.device)
        self.bos = self._bos()
        self.n_bos = int(self.bos is not None)
        self.batch_size = cfg.batch_size
        self.report = report or log.info
        self.generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + feature)

    def _bos(self) -> int | None:
        if self.model.tokenizer is None:
            return None
        try:
            return self.model.bos_token_id
        except ValueError:
            return None

    def random_prompt(self) -> torch.Tensor:
        """``[length]`` token ids drawn uniformly from the allowed tokens."""
        ids = self.allowed.nonzero().squeeze(1).cpu()
        return ids[torch.randint(len(ids), (self.cfg.length,), generator=self.generator)].to(self.device)

    def with_bos(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[batch, length]`` -> ``[batch, n_bos + length]``."""
        if self.bos is None:
            return tokens
        return F.pad(tokens, (1, 0), value=self.bos)

    def run(self, tokens: torch.Tensor, embed: Callable | None, logits: bool) -> tuple[torch.Tensor, Any]:
        """Hook activations ``[batch, seq, d_in]`` of ``tokens [batch, seq]`` (and logits ``[batch, seq, vocab]``
        when asked; otherwise the forward stops at the hook's layer). ``embed`` replaces ``hook_embed``."""
        captured: dict[str, torch.Tensor] = {}

        def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
            captured["act"] = act
            return act

        hooks = ([("hook_embed", embed)] if embed is not None else []) + [(self.hook_name, keep)]
        out = self.model.model.run_with_hooks(tokens.to(self.device), fwd_hooks=hooks,
                                              stop_at_layer=None if logits else self.layer + 1)
        return captured["act"], out if logits else None

    def feature_values(self, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activation and objective of the feature at each prompt token, ``[batch, length]`` each, from hook
        activations ``[batch, seq, d_in]``. The objective is the activation where it is positive, else a
        surrogate with a gradient: the pre-activation, or for a TopK SAE ``min(pre, pre - k-th largest other
        pre-activation)`` (positive exactly when the feature would be active)."""
        x = acts[:, self.n_bos:]
        if self.sae_param is not None:
            x = x.to(self.sae_param.device, self.sae_param.dtype)
        latents, pre = sae_encode(self.sae, x)
        own = pre[..., self.feature].float()
        k = getattr(getattr(self.sae, "activation_fn", None), "k", None)
        if isinstance(k, int) and 0 < k < pre.shape[-1]:
            others = pre.index_fill(-1, torch.tensor([self.feature], device=pre.device), -math.inf)
            own = torch.minimum(own, own - others.topk(k, dim=-1).values[..., -1].float())
        act = latents[..., self.feature].float()
        return act, torch.where(act > 0, act, own)

    def reduce(self, values: torch.Tensor, for_gradient: bool = False) -> torch.Tensor:
        """``[batch, length]`` -> ``[batch]`` by ``position``. For a gradient, ``any`` adds the mean over positions
        to the maximum, so that every position (not only the argmax's prefix) gets a signal."""
        if self.cfg.position == "last":
            return values[:, -1]
        return values.amax(dim=1) + (values.mean(dim=1) if for_gradient else 0)

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token CE ``[batch]`` of the prompt tokens; ``targets`` are ids ``[batch, seq]`` or one-hot
        ``[batch, seq, vocab]`` (differentiable) of the whole sequence, BOS included."""
        logp = logits[:, :-1].float().log_softmax(-1)  # [batch, seq - 1, vocab]
        if logp.shape[1] == 0:
            return logp.new_full((logits.shape[0],), math.nan)
        if targets.ndim == 2:
            return -logp.gather(2, targets[:, 1:, None].to(logp.device)).squeeze(2).mean(1)
        return -(targets[:, 1:].float() * logp).sum(-1).mean(1)

    def gradient(self, tokens: torch.Tensor) -> torch.Tensor:
        """Gradient ``[length, vocab]`` of the objective (``feature_values``' minus fluency_weight * CE) with
        respect to the one-hot prompt ``tokens [length]``."""
        one_hot = F.one_hot(tokens, self.W_E.shape[0]).to(self.W_E.dtype).requires_grad_()  # [length, vocab]
        full = self.with_bos(tokens[None])
        weight = self.cfg.fluency_weight

        def embed(act: torch.Tensor, hook: Any) -> torch.Tensor:
            emb = one_hot @ self.W_E  # [length, d_model]
            # Straight-through: the model's own embedding values, the one-hot's gradient.
            return act + F.pad(emb - emb.detach(), (0, 0, self.n_bos, 0))[None].to(act.dtype)

        with torch.enable_grad():
            acts, logits = self.run(full, embed, logits=weight > 0)
            objective = self.reduce(self.feature_values(acts)[1], for_gradient=True)[0]
            if weight > 0 and full.shape[1] > 1:
                targets = F.pad(one_hot, (0, 0, self.n_bos, 0))[None]  # BOS row zero: never a target
                objective = objective - weight * self.cross_entropy(logits, targets)[0]
            (grad,) = torch.autograd.grad(objective, one_hot, allow_unused=True)
        return torch.zeros_like(one_hot, dtype=torch.float32) if grad is None else grad.float()

    @torch.inference_mode()
    def _score(self, tokens: torch.Tensor) -> Scores:
        full = self.with_bos(tokens)
        acts, logits = self.run(full, None, logits=self.cfg.fluency_weight > 0)
        act, objective = self.feature_values(acts)
        ce = self.cross_entropy(logits, full) if logits is not None else act.new_zeros(act.shape[0])
        return self.reduce(act), self.reduce(objective), ce.nan_to_num(0.0)

    def score(self, tokens: torch.Tensor) -> Scores:
        """Activation, objective and CE (0 without fluency), ``[batch]`` each, of ``tokens [batch, length]``
        in chunks of ``batch_size``, halved on CUDA out-of-memory and retried."""
        out: list[Scores] = []
        start = 0
        while start < tokens.shape[0]:
            try:
                out.append(self._score(tokens[start: start + self.batch_size]))
                start += self.batch_size
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not is_oom(err) or self.batch_size == 1:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.batch_size = max(1, self.batch_size // 2)
                self.report(f"Out of memory scoring prompt candidates; batch halved to {self.batch_size}.")
        return tuple(torch.cat([s[i] for s in out]).float() for i in range(3))  # type: ignore[return-value]

    def key(self, act: torch.Tensor, objective: torch.Tensor, ce: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ranking key ``(active, objective - fluency_weight * CE)``, ``[batch]`` each: active prompts first."""
        return act > 0, objective - self.cfg.fluency_weight * ce

    @torch.inference_mode()
    def measure(self, tokens: torch.Tensor) -> tuple[float, float, list[float]]:
        """Clean full forward of ``tokens [length]``: activation, CE and per-token activations."""
        full = self.with_bos(tokens[None])
        acts, logits = self.run(full, None, logits=True)
        act = self.feature_values(acts)[0]
        return float(self.reduce(act)[0]), float(self.cross_entropy(logits, full)[0]), act[0].tolist()

    def result(self, method: str, tokens: torch.Tensor, steps: int, trajectory: list[float], stopped: bool,
               start: float, **extra: Any) -> OptimizedPrompt:
        activation, ce, per_position = self.measure(tokens)
        ids = tokens.tolist()
        strings = None if self.model.tokenizer is None else self.model.token_strings(ids)
        return OptimizedPrompt(feature=self.feature, method=method, token_ids=ids, activation=activation,
                               cross_entropy=ce, steps=steps, trajectory=trajectory, position_activations=per_position,
                               bos_token_id=self.bos, token_strings=strings,
                               stopped_early=stopped, seconds=time.perf_counter() - start,
                               batch_size=self.batch_size, extra=extra)


def better(new: tuple[bool, float], old: tuple[bool, float], margin: float = 0.0) -> bool:
    """``(active, value)`` keys: being active beats not; otherwise the value must grow by more than ``margin``."""
    return (new[0] and not old[0]) or (new[0] == old[0] and new[1] > old[1] + margin)


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
    act, pre, ce = obj.score(tokens[None])
    active, value = obj.key(act, pre, ce)
    current = (bool(active[0]), float(value[0]))
    trajectory = [float(act[0])]
    progress = Progress(f"prompt for feature {feature}", cfg.max_steps, "steps", report, cfg.report_every_s)
    k = min(cfg.top_k, int(obj.allowed.sum()))
    stale, step, stopped = 0, 0, False
    for step in range(1, cfg.max_steps + 1):
        grad = obj.gradient(tokens).masked_fill(~obj.allowed, -math.inf)  # [length, vocab]
        top = grad.topk(k, dim=1).indices  # [length, k]
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
        trajectory.append(float(act[0]))
        progress.what = f"prompt for feature {feature} (best {trajectory[-1]:.3g})"
        progress.advance(1)
        if stale >= cfg.patience:
            stopped = step < cfg.max_steps
            break
    progress.finish()
    return obj.result("discrete", tokens, step, trajectory, stopped, start)


def optimize_features(model: LanguageModel, hook_name: str, sae: Any, features: Sequence[int], cfg: PromptOptConfig,
                      *, methods: Sequence[str] = ("discrete",), allowed_tokens: torch.Tensor | None = None,
                      report: Report | None = None) -> list[OptimizedPrompt]:
    """One :class:`OptimizedPrompt` per feature and method (``discrete``, ``continuous``), feature-major."""
    from sae_assets.core.prompt_opt_continuous import optimize_continuous

    for feature in features:
        check_feature(sae, feature)
    run = {"discrete": optimize_discrete, "continuous": optimize_continuous}
    unknown = [m for m in methods if m not in run]
    if unknown:
        raise ValueError(f"Unknown prompt optimization method(s) {unknown}: use 'discrete' or 'continuous'.")
    return [run[m](model, hook_name, sae, f, cfg, allowed_tokens=allowed_tokens, report=report)
            for f in features for m in methods]


def __getattr__(name: str) -> Any:
    if name == "optimize_continuous":  # re-exported lazily: prompt_opt_continuous imports this module
        from sae_assets.core.prompt_opt_continuous import optimize_continuous

        return optimize_continuous
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
