from __future__ import annotations

import torch

from sae_assets.core.common.prompt_batches import layout, longest_first, shared_prefix_length


def test_longest_first_batches_similar_lengths_and_keeps_every_index_once() -> None:
    lengths = [5, 9, 2, 9, 7, 3]
    batches = longest_first(lengths, 4)
    assert batches == [[1, 3, 4, 0], [5, 2]]  # ties keep their order
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert longest_first([], 4) == []


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own() -> None:
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 9, 9]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter one is all prefix: keep its last
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([[1, 2, 3]]) == 0  # nothing to share with


def test_layout_puts_padding_between_the_shared_prefix_and_each_rows_own_tokens() -> None:
    prompts = [[1, 2, 3, 4], [9], [1, 2, 5, 6, 7]]
    batch = layout(prompts, [2, 0], pad_id=0)
    assert batch.rows == [2, 0] and batch.shared == 2
    assert batch.input_ids.tolist() == [[1, 2, 5, 6, 7], [1, 2, 0, 3, 4]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 1, 1]]
    # positions follow the mask (as generate derives them): every row's tokens sit where they would alone
    positions = batch.attention_mask.cumsum(-1) - 1
    for row, i in enumerate(batch.rows):
        kept = batch.attention_mask[row].bool()
        assert batch.input_ids[row][kept].tolist() == prompts[i]
        assert positions[row][kept].tolist() == list(range(len(prompts[i])))


def test_layout_without_sharing_is_left_padding() -> None:
    batch = layout([[1, 2, 3], [1, 4]], [0, 1], pad_id=0, share_prefix=False)
    assert batch.shared == 0
    assert torch.equal(batch.input_ids, torch.tensor([[1, 2, 3], [0, 1, 4]]))
    assert torch.equal(batch.attention_mask, torch.tensor([[1, 1, 1], [0, 1, 1]]))
