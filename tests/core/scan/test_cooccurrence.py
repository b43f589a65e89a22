from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from sae_assets.core.scan import cooccurrence
from sae_assets.core.scan.cooccurrence import COOCCURRENCE_SCHEMA, CooccurrenceCounter, dense_counts, window_presence


def test_window_presence_drops_the_remainder() -> None:
    feats = torch.tensor([[1.0, 0, 0], [0, 0, 2], [0, 3, 0], [0, 0, 0], [5, 5, 5]])  # 5 tokens, k=2
    assert window_presence(feats, 2).tolist() == [[True, False, True], [False, True, False]]
    assert window_presence(feats, 6).shape == (0, 3)
    assert window_presence(feats, 2, threshold=1.5).tolist() == [[False, False, True], [False, True, False]]


def test_counts_marginals_and_histogram_rows() -> None:
    counter = CooccurrenceCounter(4, torch.device("cpu"))
    counter.add(torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool))
    counter.add(torch.zeros((0, 4), dtype=torch.bool))
    counter.add(torch.tensor([[1, 1, 1, 0]], dtype=torch.bool))
    expected = torch.tensor([[3, 2, 2, 0], [2, 2, 1, 0], [2, 1, 2, 0], [0, 0, 0, 0]])
    assert torch.equal(counter.counts().long(), expected)
    assert counter.n_windows == 3 and counter.marginals().tolist() == [3, 2, 2, 0] and counter.n_pairs() == 3
    frame = counter.to_frame()
    assert frame.rows() == [(0, 3, [1, 2], [2, 2], 3), (1, 2, [0, 2], [2, 1], 3), (2, 2, [0, 1], [2, 1], 3),
                            (3, 0, [], [], 3)]
    assert torch.equal(dense_counts(frame, 4).long(), expected)
    with pytest.raises(RuntimeError, match="already read out"):
        counter.add(torch.ones((1, 4), dtype=torch.bool))


@pytest.mark.parametrize("d, block", [(7, 3), (50, 8), (50, 512), (300, 64)])
@pytest.mark.parametrize("dense_fraction, flush_windows", [(0.0, 1), (0.75, 20), (1.0, 1024)])
def test_blocked_counts_equal_a_dense_product(d: int, block: int, dense_fraction: float, flush_windows: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Buffering, row blocks, compaction to the present features (or not) and the mirror give exactly P^T P."""
    monkeypatch.setattr(cooccurrence, "DENSE_FRACTION", dense_fraction)
    gen = torch.Generator().manual_seed(d + block)
    counter = CooccurrenceCounter(d, torch.device("cpu"), block=block, flush_windows=flush_windows)
    reference = torch.zeros((d, d), dtype=torch.int64)
    for density in (0.02, 0.5, 0.1, 0.9):
        presence = torch.rand((11, d), generator=gen) < density
        counter.add(presence)
        reference += presence.long().T @ presence.long()
    assert torch.equal(counter.counts().long(), reference)
    batches = list(counter.record_batches(rows=block))
    assert all(b.schema == COOCCURRENCE_SCHEMA and b.num_rows <= block for b in batches)
    assert torch.equal(dense_counts(iter(batches), d).long(), reference)  # read back one batch at a time
    assert counter.n_pairs() == int(torch.triu(reference, 1).count_nonzero())


def test_histogram_rows_at_16k_latents_match_a_dense_reference_on_sampled_features() -> None:
    """At GemmaScope's width the rows of sampled features equal a float64 dense count of their columns."""
    d, gen = 16_384, torch.Generator().manual_seed(0)
    counter = CooccurrenceCounter(d, torch.device("cpu"))
    windows = []
    for _ in range(3):
        presence = torch.rand((24, d), generator=gen) < 0.03
        presence[:, :8] = True  # features present everywhere and features present nowhere
        presence[:, -8:] = False
        counter.add(presence)
        windows.append(presence)
    p = torch.cat(windows).double()
    sample = torch.cat([torch.arange(8), torch.randint(8, d - 8, (24,), generator=gen), torch.arange(d - 8, d)])
    reference = (p[:, sample].T @ p).round().long()  # [sampled, d]
    table = pa.Table.from_batches(list(counter.record_batches()))
    for row, f in enumerate(sample.tolist()):
        rec = table.slice(f, 1).to_pylist()[0]
        assert rec["feature"] == f and rec["marginal"] == reference[row, f] and rec["n_windows"] == 72
        dense = torch.zeros(d, dtype=torch.long)
        dense[torch.tensor(rec["partners"], dtype=torch.long)] = torch.tensor(rec["counts"], dtype=torch.long)
        dense[f] = rec["marginal"]
        assert torch.equal(dense, reference[row]), f
