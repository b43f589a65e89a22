"""The objective of prompt optimization: forwards of the model for one SAE feature, with gradients with
respect to one-hot tokens or input embeddings, batched candidate scoring (halved on CUDA out-of-memory),
and the clean measurement of a final prompt. Used by the discrete search (:mod:`sae_assets.core.prompts.optimize`)
and the continuous one (:mod:`sae_assets.core.prompts.continuous`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sae_assets.core.common.language_model import LanguageModel, hook_layer
from sae_assets.core.common.precision import compute_dtype, matmul_precision
from sae_assets.core.common.progress import Report
from sae_assets.core.prompts.config import OptimizedPrompt, PromptOptConfig

log = logging.getLogger(__name__)
Scores = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # activation, surrogate, CE: each [batch]


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


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log p(tokens[:, t + 1] | tokens[:, :t + 1])``, ``[batch, seq - 1]`` float32, from ``logits [batch, seq,
    vocab]``: the target's logit minus the log-sum-exp over the vocabulary (what ``log_softmax`` then ``gather``
    give, without the ``[batch, seq - 1, vocab]`` log-probabilities: one sequence at a time, so the log-sum-exp's
    temporary is ``[seq - 1, vocab]``)."""
    out = []
    for row, ids in zip(logits[:, :-1], tokens[:, 1:].to(logits.device), strict=True):
        row = row.float()  # float32 logits: no copy
        out.append(row.gather(1, ids[:, None]).squeeze(1) - row.logsumexp(-1))
    return torch.stack(out)


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
        self.compute_dtype = compute_dtype(cfg.precision, self.device)  # the search's; measure() is float32

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

    def run(self, tokens: torch.Tensor, embed: Callable | None, logits: bool,
            clean: bool = False) -> tuple[torch.Tensor, Any]:
        """Hook activations ``[batch, seq, d_in]`` of ``tokens [batch, seq]`` (and logits ``[batch, seq, vocab]``
        when asked; otherwise the forward stops at the hook's layer). ``embed`` replaces ``hook_embed``. The
        search's forwards run at ``cfg.precision``; ``clean``: float32 whatever it is."""
        captured: dict[str, torch.Tensor] = {}

        def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
            captured["act"] = act
            return act

        hooks = ([("hook_embed", embed)] if embed is not None else []) + [(self.hook_name, keep)]
        with matmul_precision(None if clean else self.compute_dtype, self.device):
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
        if logits.shape[1] <= 1:
            return logits.new_full((logits.shape[0],), math.nan, dtype=torch.float32)
        if targets.ndim == 2:
            return -token_log_probs(logits, targets).mean(1)
        logp = logits[:, :-1].float().log_softmax(-1)  # [batch, seq - 1, vocab]: its gradient needs every entry
        return -(targets[:, 1:].float() * logp).sum(-1).mean(1)

    def gradient(self, tokens: torch.Tensor) -> torch.Tensor:
        """Gradient ``[length, vocab]`` of the objective (``feature_values``' minus fluency_weight * CE) with
        respect to the one-hot prompt ``tokens [length]``.

        Straight-through, as autograd of ``one_hot @ W_E`` added to the model's own embeddings would give it, but
        without that forward (a full pass over ``W_E``): a zero offset on the embeddings carries the gradient
        ``[length, d_model]``, and the one-hot's is that times ``W_E^T`` (at the search's precision), plus, with
        fluency, the CE's own term in its one-hot targets."""
        full = self.with_bos(tokens[None])
        weight = self.cfg.fluency_weight
        offset = torch.zeros(tokens.shape[0], self.W_E.shape[1], dtype=self.W_E.dtype, device=self.device,
                             requires_grad=True)  # [length, d_model]

        def embed(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return act + F.pad(offset, (0, 0, self.n_bos, 0))[None].to(act.dtype)

        with torch.enable_grad():
            acts, logits = self.run(full, embed, logits=weight > 0)
            objective = self.reduce(self.feature_values(acts)[1], for_gradient=True)[0]
            leaves = [offset]
            if weight > 0 and full.shape[1] > 1:
                one_hot = F.one_hot(tokens, self.W_E.shape[0]).to(self.W_E.dtype).requires_grad_()  # [length, vocab]
                targets = F.pad(one_hot, (0, 0, self.n_bos, 0))[None]  # BOS row zero: never a target
                objective = objective - weight * self.cross_entropy(logits, targets)[0]
                leaves.append(one_hot)
            grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        grad = torch.zeros(tokens.shape[0], self.W_E.shape[0], dtype=torch.float32, device=self.device)
        if grads[0] is not None:
            with matmul_precision(self.compute_dtype, self.device):
                grad += grads[0].mm(self.W_E.t()).float()
        if len(grads) > 1 and grads[1] is not None:
            grad += grads[1].float()
        return grad

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

    def rank(self, tokens: torch.Tensor) -> tuple[torch.Tensor, tuple[bool, float]]:
        """One prompt ``tokens [length]``: its activation ``[1]`` and its ranking key ``(active, value)``."""
        act, objective, ce = self.score(tokens[None])
        active, value = self.key(act, objective, ce)
        return act, (bool(active[0]), float(value[0]))

    @torch.inference_mode()
    def measure(self, tokens: torch.Tensor) -> tuple[float, float, list[float]]:
        """Clean full forward of ``tokens [length]``: activation, CE and per-token activations."""
        full = self.with_bos(tokens[None])
        acts, logits = self.run(full, None, logits=True, clean=True)
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
