from __future__ import annotations

import torch

from sae_assets.core.cooccurrence import CooccurrenceCounter, dense_counts, window_presence


def test_window_presence_drops_the_remainder() -> None:
    feats = torch.tensor([[1.0, 0, 0], [0, 0, 2], [0, 3, 0], [0, 0, 0], [5, 5, 5]])  # 5 tokens, k=2
    assert window_presence(feats, 2).tolist() == [[True, False, True], [False, True, False]]
    assert window_presence(feats, 6).shape == (0, 3)
    assert window_presence(feats, 2, threshold=1.5).tolist() == [[False, False, True], [False, True, False]]


def test_counts_marginals_and_sparse_round_trip() -> None:
    counter = CooccurrenceCounter(4, torch.device("cpu"))
    counter.add(torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool))
    counter.add(torch.zeros((0, 4), dtype=torch.bool))
    counter.add(torch.tensor([[1, 1, 1, 0]], dtype=torch.bool))
    expected = torch.tensor([[3, 2, 2, 0], [2, 2, 1, 0], [2, 1, 2, 0], [0, 0, 0, 0]])
    assert torch.equal(counter.counts.long(), expected)
    assert counter.n_windows == 3 and counter.marginals().tolist() == [3, 2, 2, 0]
    frame = counter.to_frame()
    assert (frame["feature_i"] <= frame["feature_j"]).all() and (frame["count"] > 0).all()
    assert frame.height == 6  # (0,0) (0,1) (0,2) (1,1) (1,2) (2,2)
    assert torch.equal(dense_counts(frame, 4), expected)
