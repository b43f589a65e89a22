"""Language models through TransformerLens: from the hub, a local directory, or a packaged GGUF.

Loaded lazily at execution and cached per process (one load serves every partition of a run and
every run of an in-process executor).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import torch

from sae_assets.catalog import LanguageModelSpec
from sae_assets.core.common.language_model import LanguageModel
from sae_assets.resources.device import DeviceResource, resolve_dtype
from sae_assets.resources.gguf_cache import load_gguf_cached
from sae_assets.resources.gguf_parsing import parsed_once

log = logging.getLogger(__name__)

_CACHE: dict[tuple, LanguageModel] = {}
_LOCK = threading.Lock()


class ModelLoadError(RuntimeError):
    """A language model could not be loaded; the message names what was tried."""


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"Python package {package!r} is not installed (run scripts/setup).")
    return Path(next(iter(spec.submodule_search_locations)))


def load_hf_model(spec: LanguageModelSpec, dtype: torch.dtype) -> tuple[Any, Any]:
    """The Hugging Face model and tokenizer: from a GGUF file (a package's or a local folder's), a local folder or
    the hub."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_folder = package_dir(spec.gguf_package) if spec.gguf_package else (
        Path(spec.local_path) if spec.local_path else None)
    if gguf_folder is not None and spec.gguf_file:  # the catalog requires gguf_file with gguf_package
        folder = gguf_folder
        if not (folder / spec.gguf_file).exists():
            raise ModelLoadError(f"GGUF file {spec.gguf_file!r} not found in {folder}.")
        gguf = folder / spec.gguf_file

        def dequantize() -> tuple[Any, Any]:
            log.info("Loading %s from GGUF %s (dequantized to %s)", spec.hub_id, gguf, dtype)
            with parsed_once():
                return (AutoModelForCausalLM.from_pretrained(folder, gguf_file=spec.gguf_file, dtype=dtype),
                        AutoTokenizer.from_pretrained(folder, gguf_file=spec.gguf_file))

        return load_gguf_cached(gguf, dtype, dequantize)
    source = spec.local_path or spec.hub_id
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    return model, tokenizer


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
