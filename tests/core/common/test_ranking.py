"""Partial ranking against a full stable sort."""

from __future__ import annotations

import numpy as np
import torch

from sae_assets.core.common.ranking import top_order


def test_top_order_is_the_head_of_a_stable_sort() -> None:
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(np.round(rng.standard_normal((6, 40)), 1))  # many ties
    scores[2] = 0.0  # a row that is all ties
    full = torch.sort(scores, dim=1, descending=True, stable=True).indices
    for k in (1, 7, 39, 40):
        assert torch.equal(top_order(scores, k), full[:, :k])
