"""A disk cache of GGUF models as transformers dequantizes them, so each process does not dequantize again.

transformers turns a GGUF file into a torch model by dequantizing every tensor on the CPU: ~20 s for
SmolLM2-135M on 2 cores, paid by every process that loads it (each run ``dagster dev`` launches, each sensor
run, the demo twice: the scan's model and the labeller's). The first load of a GGUF file in a dtype writes the
dequantized weights (safetensors), the config and the tokenizer under ``SAE_ASSETS_MODEL_CACHE`` (default
``~/.cache/sae-assets/models``; ``off`` disables it); later loads read that folder (memory-mapped, ~1 s) and give
the same weights, so the same logits. The folder's name holds the GGUF file's name, size and modification time
and the dtype: a changed file gets a new entry. An entry is written to a temporary folder and renamed into place,
so concurrent processes never read half an entry; one that cannot be read is ignored and written again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sae_assets import settings

log = logging.getLogger(__name__)
COMPLETE = "complete.json"
"""Written last into an entry: an entry without it is not used."""


def cache_root() -> Path | None:
    """Where dequantized models are kept, or None when the cache is off."""
    value = settings.get(settings.MODEL_CACHE, settings.DEFAULT_MODEL_CACHE)
    return None if value.lower() in ("off", "none", "") else Path(value).expanduser()


def entry_dir(root: Path, gguf: Path, dtype: torch.dtype) -> Path:
    stat = gguf.stat()
    return root / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}-{str(dtype).removeprefix('torch.')}"


def load_entry(folder: Path, dtype: torch.dtype) -> tuple[Any, Any] | None:
    """(model, tokenizer) from a complete entry, or None when there is none or it cannot be read."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / COMPLETE).exists():
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except Exception as err:  # safetensors, tokenizers and transformers each raise their own kinds
        log.warning("Ignoring the unreadable dequantized-model cache entry %s (%s: %s); loading the GGUF file",
                    folder, type(err).__name__, err)
        return None
    log.info("Loaded the dequantized model from the cache %s", folder)
    return model, tokenizer


def save_entry(folder: Path, model: Any, tokenizer: Any, gguf: Path) -> None:
    """Write ``model`` (dequantized) and ``tokenizer`` as an entry; a failure only logs (the cache is optional)."""
    from safetensors.torch import save_file

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            config = model.config.to_dict()
            config.pop("quantization_config", None)  # the weights are plain tensors now
            (tmp / "config.json").write_text(json.dumps(config))
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            if getattr(model.config, "tie_word_embeddings", False):
                state.pop("lm_head.weight", None)  # tied to the input embedding; safetensors refuses shared storage
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            tokenizer.save_pretrained(tmp)
            (tmp / COMPLETE).write_text(json.dumps({"gguf": str(gguf)}))
            os.replace(tmp, folder)  # atomic; fails if another process put the entry in place first
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("Cached the dequantized model in %s", folder)
    except OSError as err:
        if not (folder / COMPLETE).exists():
            log.warning("Could not cache the dequantized model in %s: %s", folder, err)


def load_gguf_cached(gguf: Path, dtype: torch.dtype, load: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
    """(model, tokenizer) of the GGUF file ``gguf`` in ``dtype``: from the cache, else ``load()`` (which
    dequantizes) and cached for the next process."""
    root = cache_root()
    if root is None:
        return load()
    folder = entry_dir(root, gguf, dtype)
    if folder.exists() and (found := load_entry(folder, dtype)) is not None:
        return found
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)  # incomplete or unreadable: written again below
    model, tokenizer = load()
    save_entry(folder, model, tokenizer, gguf)
    return model, tokenizer
