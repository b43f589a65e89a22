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
from sae_assets.resources.hub_errors import classify_hub_error, hub_endpoint

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


def _load_failure(spec: LanguageModelSpec, err: Exception) -> str:
    """One sentence on why the model could not be loaded from its folder or the hub, and what to do about it."""
    what = f"language model {spec.hub_id!r}"
    if spec.local_path is not None:
        return (f"Could not load {what} from {spec.local_path}: {err}. Check the catalog's language_model entry, "
                "network access to the hub, and HF_TOKEN for gated models.")
    failure, endpoint = classify_hub_error(err), hub_endpoint()
    if failure.kind == "offline":
        return (f"Could not download {what} from the Hugging Face hub repo {spec.hub_id!r}: it is not in the local "
                f"Hugging Face cache and the hub is offline here (HF_HUB_OFFLINE is set); unset it where {endpoint} is "
                "reachable, or give the catalog's language_model a local_path or a GGUF.")
    if failure.kind == "unreachable":
        return (f"Could not reach the Hugging Face hub at {endpoint} to download {what}; check network access to it "
                "(HF_ENDPOINT, proxies) or give the catalog's language_model a local_path or a GGUF.")
    if failure.kind == "repo":
        return (f"The Hugging Face hub at {endpoint} has no model repo {spec.hub_id!r} (or it is private); check the "
                "catalog's language_model.hub_id, and HF_TOKEN for a private repo.")
    if failure.kind == "access":
        return (f"The Hugging Face hub at {endpoint} refused access to the repo of {what} (a gated model); accept its "
                "terms on the hub and set HF_TOKEN to a token that may read it.")
    if failure.kind == "file" and failure.path:
        return (f"The Hugging Face hub repo {spec.hub_id!r} at {endpoint} has no file {failure.path!r}, which "
                f"transformers needs to load {what}; check the catalog's language_model.hub_id.")
    return (f"Could not load {what} from the Hugging Face hub repo {spec.hub_id!r}: {err}. Check the catalog's "
            "language_model entry, network access to the hub, and HF_TOKEN for gated models.")


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
            raise ModelLoadError(_load_failure(spec, err)) from err
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
