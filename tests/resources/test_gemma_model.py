"""Gemma 3 270M from the packaged GGUF: the named architecture the bridge needs, the residual stream against the
plain Hugging Face model, the tied unembedding behind the ``1 + w`` final norm, and the tokenizer's pieces as the
example windows show them."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from sae_assets.resources.language_model import name_architecture
from tests import gemma as gemma_fixtures
from tests.gemma import BOS, D_MODEL, N_LAYERS, VOCAB

gemma = gemma_fixtures.gemma
gemma_hf = gemma_fixtures.gemma_hf

SENTENCE = "The cat sat on the mat, and the café was closed."
DISPLAYED = " The café—costs €3 🙂\nNext line."
"""A leading space, multi-byte characters the vocabulary holds whole (é, —, €, an emoji) and a newline."""
BYTE_FALLBACK = "a\u00a0b 𝔘."
"""A no-break space and U+1D518: characters Gemma's vocabulary lacks, spelled as UTF-8 byte tokens."""


CHECKED_LAYERS = (0, 5, 6, 9, 12, 15, 16)
"""The demo's SAE layers (6, 12), Gemma Scope 2's (5, 9, 12, 15; 5 is a global-attention block, like 11 and 17), the
first block and the one before the last (each call runs the blocks up to its layer: all 17 would take 153)."""


def _ids(lm, text: str) -> torch.Tensor:
    return torch.tensor([[lm.bos_token_id, *lm.tokenize(text)]])


def _rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma's RMSNorm as HF computes it (float32): ``x / rms(x) * scale``."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale


def test_an_empty_architectures_list_is_named_after_the_model_class() -> None:
    class Gemma3ForCausalLM:
        config = SimpleNamespace(architectures=None)

    assert name_architecture(Gemma3ForCausalLM()).config.architectures == ["Gemma3ForCausalLM"]
    named = SimpleNamespace(config=SimpleNamespace(architectures=["Other"]))
    assert name_architecture(named).config.architectures == ["Other"]


@pytest.mark.slow
def test_load_hf_model_names_the_architecture_the_bridge_needs(gemma_hf, gemma) -> None:
    model, tokenizer = gemma_hf
    assert model.config.architectures == ["Gemma3ForCausalLM"]
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.vocab_size) == (
        D_MODEL, N_LAYERS, VOCAB)
    assert model.config.tie_word_embeddings and model.config.final_logit_softcapping is None
    assert tokenizer.bos_token_id == BOS
    assert (gemma.d_model, gemma.n_layers, gemma.bos_token_id) == (D_MODEL, N_LAYERS, BOS)
    assert type(gemma.model).__name__ == "TransformerBridge"
    assert gemma.tokenize("Hello world")[:1] != [BOS]  # no BOS from tokenize: the scan puts it in


@pytest.mark.slow
def test_resid_post_is_hf_hidden_states_and_the_last_one_is_before_the_final_norm(gemma_hf, gemma) -> None:
    model, _ = gemma_hf
    tokens = _ids(gemma, SENTENCE)
    assert tokens[0, 0] == BOS
    with torch.inference_mode():
        hidden = model(tokens, output_hidden_states=True).hidden_states  # embeddings, then after each block
    assert len(hidden) == N_LAYERS + 1
    acts = {layer: gemma.hook_activations(tokens, f"blocks.{layer}.hook_resid_post") for layer in CHECKED_LAYERS}
    for layer, got in acts.items():
        # The bridge runs HF's eager attention, this model SDPA: they differ by float32 rounding, ~1e-7 of the
        # largest coordinate (~1e5 from block 10 on).
        expected = hidden[layer + 1]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6 * expected.abs().max().item(),
                                   msg=lambda m, layer=layer: f"blocks.{layer}.hook_resid_post: {m}")
    # HF's last hidden state is after the final norm; blocks.17.hook_resid_post is before it.
    last = gemma.hook_activations(tokens, f"blocks.{N_LAYERS - 1}.hook_resid_post")
    normed = _rms_norm(last, 1 + model.model.norm.weight, model.config.rms_norm_eps)
    torch.testing.assert_close(normed, hidden[N_LAYERS], rtol=1e-4, atol=1e-4)
    norms = acts[6][0].norm(dim=-1)
    assert norms[0] > 10 * norms[1:].median()  # BOS carries a residual norm ~20x the others' (~55k vs ~3k)


@pytest.mark.slow
def test_unembedding_is_the_tied_embedding_behind_a_one_plus_w_rms_norm(gemma_hf, gemma) -> None:
    model, _ = gemma_hf
    unembedding = gemma.unembedding()
    embedding = model.model.embed_tokens.weight  # raw: the sqrt(d_model) scaling applies to the input only
    assert unembedding.w_u.shape == (D_MODEL, VOCAB)
    assert torch.equal(unembedding.w_u, embedding.T) and torch.equal(unembedding.w_u, model.lm_head.weight.T)
    assert unembedding.norm_kind == "rms"
    assert unembedding.norm_scale is not None
    assert torch.equal(unembedding.norm_scale, 1 + model.model.norm.weight)
    assert (model.model.norm.weight < 0).any() and model.model.norm.weight.max() > 100  # far from uniform

    tokens = _ids(gemma, SENTENCE)  # the model's logits are this unembedding of the normed last residual
    last = gemma.hook_activations(tokens, f"blocks.{N_LAYERS - 1}.hook_resid_post")
    with torch.inference_mode():
        logits = model(tokens).logits
        ours = _rms_norm(last, unembedding.norm_scale, model.config.rms_norm_eps) @ unembedding.w_u
    torch.testing.assert_close(ours, logits, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_token_strings_join_back_to_the_text(gemma) -> None:
    ids = gemma.tokenize(DISPLAYED)
    strings = gemma.token_strings(ids)
    assert "".join(strings) == DISPLAYED
    assert strings[:2] == [" The", " café"] and "—" in strings and " 🙂" in strings and "\n" in strings
    distinct = sorted(set(ids))  # as the scan calls it: the distinct ids of many windows at once
    assert [dict(zip(distinct, gemma.token_strings(distinct), strict=True))[i] for i in ids] == strings
    assert gemma.token_strings([BOS]) == ["<bos>"]  # the scan leaves BOS out of its windows


def _read_back(strings: list[str]) -> str:
    """A window's text from its token strings, byte pieces (``<0xC2>``) turned back into their bytes."""
    data = b"".join(bytes.fromhex(m.group(1)) if (m := re.fullmatch(r"<0x([0-9A-F]{2})>", s)) else s.encode()
                    for s in strings)
    return data.decode()


@pytest.mark.slow
def test_byte_fallback_tokens_show_their_byte(gemma) -> None:
    ids = gemma.tokenize(BYTE_FALLBACK)
    pieces = gemma.tokenizer.convert_ids_to_tokens(ids)
    assert pieces == ["a", "<0xC2>", "<0xA0>", "b", "▁", "<0xF0>", "<0x9D>", "<0x94>", "<0x98>", "."]
    assert [gemma.tokenizer.decode([i]) for i in ids][1:3] == ["\ufffd", "\ufffd"]  # what decoding alone gives
    strings = gemma.token_strings(ids)
    assert strings == ["a", "<0xC2>", "<0xA0>", "b", " ", "<0xF0>", "<0x9D>", "<0x94>", "<0x98>", "."]
    assert _read_back(strings) == BYTE_FALLBACK == gemma.tokenizer.decode(ids)
    high = [gemma.tokenizer.convert_tokens_to_ids(f"<0x{b:02X}>") for b in range(0x80, 0x100)]
    assert len(set(gemma.token_strings(high))) == 128
    assert gemma.token_strings([gemma.tokenizer.convert_tokens_to_ids("<0x0D>")]) == ["\r"]  # ASCII: its character
