from __future__ import annotations

import pytest
import torch

from sae_assets.catalog import LanguageModelSpec
from sae_assets.resources.language_model import ModelLoadError, load_language_model

pytestmark = pytest.mark.slow


def test_gguf_model_loads_offline(smollm2) -> None:
    assert smollm2.d_model == 576 and smollm2.n_layers == 30
    assert smollm2.tokenize("Hello world")[:1] != [smollm2.bos_token_id]


def test_hook_activations_stop_at_the_hook_and_match_hf(smollm2) -> None:
    tokens = torch.tensor([[smollm2.bos_token_id, *smollm2.tokenize("The cat sat on the mat.")]])
    acts = smollm2.hook_activations(tokens, "blocks.3.hook_resid_post")
    assert acts.shape == (1, tokens.shape[1], 576)
    hf = smollm2.model.original_model
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states[4]  # after block 3
    torch.testing.assert_close(acts, hidden, rtol=1e-4, atol=1e-4)


def test_blocks_after_the_hook_do_not_run(smollm2) -> None:
    ran: list[int] = []
    handles = [block.register_forward_hook(lambda *_, i=i: ran.append(i))
               for i, block in enumerate(smollm2.model.original_model.model.layers)]
    try:
        smollm2.hook_activations(torch.tensor([[smollm2.bos_token_id, 42, 43]]), "blocks.2.hook_resid_post")
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1, 2]


def test_unknown_hook_is_a_clear_error(smollm2) -> None:
    with pytest.raises(ValueError, match="past the last layer"):
        smollm2.check_hook("blocks.40.hook_resid_post")
    with pytest.raises(ValueError, match="does not exist"):
        smollm2.check_hook("blocks.2.hook_nope")


def test_unreachable_hub_names_the_repo() -> None:
    spec = LanguageModelSpec(hub_id="google/gemma-2-2b")
    with pytest.raises(ModelLoadError, match="hub repo 'google/gemma-2-2b'"):
        load_language_model(spec, torch.device("cpu"), torch.float32)
