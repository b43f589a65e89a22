from __future__ import annotations

import pytest
import torch

from sae_assets.core.sae.metrics import evaluate_sae
from tests.builders import build_topk_sae


class _IdentitySae(torch.nn.Module):
    """Latents = ReLU of the input's coordinates; decode sums them back: perfect on x >= 0."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(d))
        self.cfg = type("Cfg", (), {"d_sae": d})()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.w


def test_perfect_reconstruction_counts_l0_and_dead_latents() -> None:
    x = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    m = evaluate_sae(_IdentitySae(4), x, batch_size=2)
    assert m.explained_variance == pytest.approx(1.0)
    assert m.mse == pytest.approx(0.0)
    assert m.l0 == pytest.approx(4 / 3)
    assert m.dead_fraction == pytest.approx(0.5)
    assert m.feature_density.tolist() == pytest.approx([2 / 3, 0.0, 2 / 3, 0.0])


def test_matches_a_direct_computation() -> None:
    sae = build_topk_sae(d_in=8, d_sae=16, k=3)
    x = torch.randn(50, 8)
    m = evaluate_sae(sae, x, batch_size=7)
    recon = sae.decode(sae.encode(x))
    ev = 1 - ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert m.explained_variance == pytest.approx(ev.item(), rel=1e-5)
    assert m.l0 == pytest.approx((sae.encode(x) > 0).sum(1).float().mean().item())


def test_empty_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        evaluate_sae(_IdentitySae(2), torch.empty(0, 2))
