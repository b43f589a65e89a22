"""The dequantized-GGUF cache: the second load reads the same weights and tokenizer from disk; a damaged entry is
ignored and written again; ``off`` turns it off."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from sae_assets.resources import gguf_cache
from sae_assets.resources.labeller import DEFAULT_LOCAL
from sae_assets.resources.language_model import load_hf_model


def test_a_second_load_reads_the_same_model_from_the_cache_and_a_damaged_entry_is_rewritten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SAE_ASSETS_MODEL_CACHE", str(tmp_path / "models"))
    caplog.set_level(logging.INFO, logger=gguf_cache.__name__)
    model, tokenizer = load_hf_model(DEFAULT_LOCAL, torch.float32)  # dequantized, then cached
    [entry] = (tmp_path / "models").iterdir()
    assert (entry / gguf_cache.COMPLETE).exists() and entry.name.endswith("-float32")

    cached, cached_tokenizer = load_hf_model(DEFAULT_LOCAL, torch.float32)
    assert f"Loaded the dequantized model from the cache {entry}" in caplog.text
    assert cached.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, cached.state_dict()[k]) for k, v in model.state_dict().items())
    chat = [{"role": "user", "content": "Label this feature: <<cat>> sat"}]
    assert cached_tokenizer.apply_chat_template(chat, tokenize=False) == tokenizer.apply_chat_template(chat,
                                                                                                     tokenize=False)
    ids = tokenizer("The cat sat on the mat.", return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(cached(**ids).logits, model(**ids).logits)

    (entry / "model.safetensors").write_bytes(b"cut short")  # a damaged entry: ignored, dequantized again, rewritten
    caplog.clear()
    again, _ = load_hf_model(DEFAULT_LOCAL, torch.float32)
    assert "Ignoring the unreadable dequantized-model cache entry" in caplog.text
    assert torch.equal(again.state_dict()["model.embed_tokens.weight"], model.state_dict()["model.embed_tokens.weight"])
    assert (entry / "model.safetensors").stat().st_size > 100_000_000 and (entry / gguf_cache.COMPLETE).exists()


def test_the_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAE_ASSETS_MODEL_CACHE", "off")
    assert gguf_cache.cache_root() is None
    monkeypatch.setenv("SAE_ASSETS_MODEL_CACHE", "~/somewhere")
    assert gguf_cache.cache_root() == Path.home() / "somewhere"
