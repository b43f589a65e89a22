"""Where the discrete search starts: the feature's top dataset example, cut to the prompt's length.

GCG's single-token swaps from a random prompt often stall below what the corpus already reaches; starting from
the ``length`` tokens that precede (and include) the top example's peak token starts the search near the dataset
maximum, with the feature's own context, and the swaps improve from there.
"""

from __future__ import annotations

from collections.abc import Sequence


def example_prompt(token_ids: Sequence[int], peak: int, length: int, first: int = 0) -> list[int] | None:
    """The ``length`` tokens of an example window ending at its peak token (index ``peak`` in ``token_ids``),
    none before ``first`` (1 when the window starts with the document's BOS, which the optimizer prepends
    itself); None when the window holds fewer tokens before the peak."""
    start = peak - length + 1
    if start < first or peak >= len(token_ids):
        return None
    return [int(t) for t in token_ids[start : peak + 1]]
