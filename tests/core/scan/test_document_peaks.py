import pytest
import torch

from sae_assets.core.scan.document_peaks import document_peaks


def sparse_latents(b: int, seq: int, d: int, seed: int = 0) -> torch.Tensor:
    """``[b, seq, d]`` latents like a TopK SAE's: mostly zero, ties at zero and repeated values."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.rand((b, seq, d), generator=g).round(decimals=1) * (torch.rand((b, seq, d), generator=g) < 0.1)
    feats[:, 0] = 0.0  # BOS
    return feats


def reference(feats: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    peak, pos = feats.max(dim=1)
    return peak, pos, (feats > threshold).sum(dim=(0, 1), dtype=torch.int32)


@pytest.mark.parametrize(("compiled", "threads"), [(True, 1), (True, 2), (True, 3), (False, None)])
@pytest.mark.parametrize("threshold", [0.0, 0.35])
def test_peaks_positions_and_counts_equal_torch(compiled: bool, threads: int | None, threshold: float) -> None:
    feats = sparse_latents(5, 300, 64)  # 1,500 rows: several of the torch path's count blocks
    feats[1, :, 3] = -1.0  # a feature negative throughout one document: its peak is at the first token
    feats[2, 4, 5] = feats[2, 9, 5] = 2.0  # a tie: the first position wins
    feats[3, :, 9] = 0.0
    feats[3, 0, 9] = feats[3, 5, 9] = -0.0  # zeros of both signs tie: the first position wins
    feats[4, :, 11] = float("-inf")
    got = document_peaks(feats, threshold, compiled, threads)
    want = reference(feats, threshold)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and torch.equal(g, w)
    assert int(got[1][2, 5]) == 4


@pytest.mark.parametrize("compiled", [True, False])
def test_nan_is_the_peak_at_its_first_position_as_in_torch(compiled: bool) -> None:
    feats = sparse_latents(3, 11, 8, seed=1)
    feats[0, 3, 2] = feats[0, 7, 2] = float("nan")
    feats[1, 0, 4] = float("nan")
    feats[2, 5, 6] = float("inf")
    peak, pos, n_active = document_peaks(feats, compiled=compiled, threads=2)
    want_peak, want_pos, want_active = reference(feats, 0.0)
    assert torch.equal(peak.isnan(), want_peak.isnan())
    assert torch.equal(peak.nan_to_num(-7.0), want_peak.nan_to_num(-7.0))
    assert torch.equal(pos, want_pos) and torch.equal(n_active, want_active)
    assert (int(pos[0, 2]), int(pos[1, 4])) == (3, 0)


def test_other_dtypes_use_torch() -> None:
    feats = sparse_latents(2, 9, 16).to(torch.bfloat16)
    for g, w in zip(document_peaks(feats), reference(feats, 0.0), strict=True):
        assert torch.equal(g, w)
