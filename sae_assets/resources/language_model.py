"""Language models through TransformerLens: from the hub, a local directory, or a packaged GGUF.

Loaded lazily at execution and cached per process (one load serves every partition of a run and
every run of an in-process executor).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dagster as dg
import torch

from sae_assets.catalog import LanguageModelSpec
from sae_assets.core.common.language_model import LanguageModel
from sae_assets.resources.device import DeviceResource, resolve_dtype
from sae_assets.resources.gguf_cache import load_gguf_cached
from sae_assets.resources.gguf_location import ModelLoadError, gguf_path
from sae_assets.resources.gguf_parsing import parsed_once

log = logging.getLogger(__name__)

_CACHE: dict[tuple, LanguageModel] = {}
_LOCK = threading.Lock()


__all__ = ["LanguageModelResource", "ModelLoadError", "load_hf_model", "load_language_model"]


def name_architecture(hf_model: Any) -> Any:
    """Give the config its ``architectures`` where the source left it empty (a GGUF file's config has none:
    transformers builds it from the GGUF metadata), so TransformerLens's bridge can find its adapter; the class
    transformers chose (``Gemma3ForCausalLM``) is the one a hub config names."""
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    return hf_model


def load_hf_model(spec: LanguageModelSpec, dtype: torch.dtype) -> tuple[Any, Any]:
    """The Hugging Face model and tokenizer: from a GGUF file (a package's or a local folder's), a local folder or
    the hub."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(spec)
    if gguf is not None:
        def dequantize() -> tuple[Any, Any]:
            log.info("Loading %s from GGUF %s (dequantized to %s)", spec.hub_id, gguf, dtype)
            with parsed_once():
                return (name_architecture(AutoModelForCausalLM.from_pretrained(
                            gguf.parent, gguf_file=gguf.name, dtype=dtype)),
                        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))

        model, tokenizer = load_gguf_cached(gguf, dtype, dequantize)
        return name_architecture(model), tokenizer
    source = spec.local_path or spec.hub_id
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    return name_architecture(model), tokenizer


def load_language_model(spec: LanguageModelSpec, device: torch.device, dtype: torch.dtype) -> LanguageModel:
    """Load (or fetch from the per-process cache) a model wrapped in a ``TransformerBridge``."""
    key = (spec, str(device), str(dtype))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        from transformer_lens.model_bridge import TransformerBridge

        try:
            hf_model, tokenizer = load_hf_model(spec, dtype)
        except ModelLoadError:
            raise
        except (OSError, ValueError) as err:
            where = spec.local_path or f"the Hugging Face hub repo {spec.hub_id!r}"
            raise ModelLoadError(
                f"Could not load language model {spec.hub_id!r} from {where}: {err}. "
                "Check the catalog's language_model entry, network access to the hub, and HF_TOKEN "
                "for gated models."
            ) from err
        bridge = TransformerBridge.boot_transformers(
            spec.hub_id, hf_model=hf_model.to(device), tokenizer=tokenizer, device=device, dtype=dtype
        )
        bridge.eval()
        lm = LanguageModel(name=spec.hub_id, model=bridge, tokenizer=tokenizer, device=device, dtype=dtype)
        _CACHE[key] = lm
        return lm


class LanguageModelResource(dg.ConfigurableResource):
    """Loads the catalog's language models on the configured device (cached per process)."""

    device: DeviceResource

    def load(self, spec: LanguageModelSpec, dtype: str | None = None) -> LanguageModel:
        """``dtype`` overrides the device resource's (``auto | float32 | bfloat16 | float16``)."""
        device = self.device.torch_device()
        return load_language_model(spec, device, resolve_dtype(dtype, device) if dtype else self.device.torch_dtype())
