from __future__ import annotations

import pytest
import torch
from sae_lens import SAE

from sae_assets.core.sae.metrics import evaluate_sae
from sae_assets.core.sae.training import SaeTrainingConfig, collect_activations, train_sae


def _sparse_data(n: int, seed: int = 0) -> torch.Tensor:
    """Sparse combinations of 64 unit directions in 32 dims, plus a large mean offset (as residual streams have)."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(64, 32, generator=g)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    codes = (torch.rand(n, 64, generator=g) < 0.05).float() * torch.rand(n, 64, generator=g) * 4
    return codes @ dirs + 3.0


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_training_learns_a_sparse_code(architecture: str) -> None:
    data = _sparse_data(12_000)
    cfg = SaeTrainingConfig(architecture=architecture, d_sae=128, k=6, training_samples=120_000,
                            batch_size=256, lr=2e-3, seed=0)
    messages: list[str] = []
    sae = train_sae(data[:10_000], cfg, "blocks.1.hook_resid_post", "toy", torch.device("cpu"), messages.append)
    assert isinstance(sae, SAE) and sae.cfg.architecture() == architecture
    assert sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    m = evaluate_sae(sae, data[10_000:])
    assert m.explained_variance > 0.6, m.as_dict()
    assert m.dead_fraction < 0.5, m.as_dict()
    if architecture == "topk":
        assert m.l0 == pytest.approx(6.0)
    assert messages and "SAE training" in messages[-1]


def test_training_is_seeded() -> None:
    data = _sparse_data(3_000)
    cfg = SaeTrainingConfig(architecture="topk", d_sae=32, k=4, training_samples=6_000, batch_size=256)
    a = train_sae(data, cfg, "h", "toy", torch.device("cpu"))
    b = train_sae(data, cfg, "h", "toy", torch.device("cpu"))
    assert torch.equal(a.W_dec, b.W_dec)


def test_fewer_vectors_than_a_batch_is_rejected() -> None:
    cfg = SaeTrainingConfig(architecture="topk", d_sae=32, k=4, training_samples=1_000, batch_size=256)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_sae(torch.randn(100, 8), cfg, "h", "toy", torch.device("cpu"))


def test_bf16_autocast_training_learns_the_code_and_stores_float32() -> None:
    """precision bfloat16 reaches SAELens's trainer (the weights differ from float32 training's) and the SAE still
    learns the code; it is stored in float32."""
    data = _sparse_data(12_000)
    common = dict(architecture="topk", d_sae=128, k=6, training_samples=60_000, batch_size=256, lr=2e-3, seed=0)
    full = train_sae(data[:10_000], SaeTrainingConfig(**common), "h", "toy", torch.device("cpu"))
    mixed = train_sae(data[:10_000], SaeTrainingConfig(**common, precision="bfloat16"), "h", "toy",
                      torch.device("cpu"))
    assert mixed.W_dec.dtype == torch.float32 and not torch.equal(full.W_dec, mixed.W_dec)
    ev_full, ev_mixed = (evaluate_sae(s, data[10_000:]).explained_variance for s in (full, mixed))
    assert ev_mixed > 0.6 and abs(ev_mixed - ev_full) < 0.05, (ev_full, ev_mixed)


class _TokenIdModel:
    """A stand-in language model whose hook activation at a position is its token id (d_model 3)."""

    d_model = 3
    bos_token_id = 1

    def hook_activations(self, tokens: torch.Tensor, hook_name: str) -> torch.Tensor:
        return tokens.float()[..., None].expand(*tokens.shape, 3)


def test_activations_leave_out_every_bos_position() -> None:
    """Position 0 and the BOS separators between packed documents are not trained on (Gemma's BOS activations
    are ~20x the other tokens' norm); the other tokens keep their order, across LM batches."""
    contexts = torch.tensor([[1, 5, 6, 1, 7], [1, 8, 1, 9, 10], [1, 11, 12, 13, 14]])
    acts = collect_activations(_TokenIdModel(), contexts, "blocks.0.hook_resid_post", lm_batch_size=2)  # type: ignore[arg-type]
    assert acts[:, 0].tolist() == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert acts.dtype == torch.float32 and acts.shape == (10, 3)
