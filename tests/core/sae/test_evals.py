"""The platform's SAE evals equal SAELens's own (``sae_lens.evals``) on a small model, to 1e-4."""

from __future__ import annotations

import pytest
import torch
from sae_lens.evals import get_downstream_reconstruction_metrics, get_sparsity_and_variance_metrics
from sae_lens.training.activation_scaler import ActivationScaler

from sae_assets.core.sae.evals import evaluate_spliced, rows_per_batch
from tests.builders import build_tiny_lm, build_topk_sae

BOS = 0
HOOK = "blocks.0.hook_resid_post"


class TokenBatches:
    """What SAELens's evals ask of an ActivationsStore: the next ``n`` contexts."""

    def __init__(self, contexts: torch.Tensor) -> None:
        self.contexts, self.at = contexts, 0

    def get_batch_tokens(self, n: int) -> torch.Tensor:
        batch = self.contexts[self.at : self.at + n]
        self.at += n
        return batch


def _contexts(n: int = 6, seq: int = 24, vocab: int = 50, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (n, seq), generator=generator)
    tokens[:, 0] = BOS
    tokens[::2, 11] = BOS  # a document boundary inside some contexts
    return tokens


def _saelens(lm, sae, contexts: torch.Tensor, batch_rows: int) -> dict[str, float]:
    n_batches = contexts.shape[0] // batch_rows
    scaler = ActivationScaler()
    sparsity, features = get_sparsity_and_variance_metrics(
        sae, lm.model, TokenBatches(contexts), scaler, n_batches=n_batches, compute_l2_norms=True,
        compute_sparsity_metrics=True, compute_variance_metrics=True, compute_featurewise_density_statistics=True,
        eval_batch_size_prompts=batch_rows, model_kwargs={}, ignore_tokens=[BOS])
    downstream = get_downstream_reconstruction_metrics(
        sae, lm.model, TokenBatches(contexts), scaler, compute_kl=True, compute_ce_loss=True, n_batches=n_batches,
        eval_batch_size_prompts=batch_rows, ignore_tokens=[BOS])
    return {**sparsity, **downstream, "feature_density": features["feature_density"]}


@pytest.mark.parametrize("batch_rows", [2, 6])
def test_metrics_equal_saelens(batch_rows: int) -> None:
    lm = build_tiny_lm(d_model=16, n_layers=2, d_vocab=50)
    sae = build_topk_sae(d_in=16, d_sae=32, k=4, hook_name=HOOK)
    contexts = _contexts()
    ours = evaluate_spliced(lm, sae, HOOK, contexts, batch_rows, [BOS])
    theirs = _saelens(lm, sae, contexts, batch_rows)
    names = ["explained_variance", "mse", "cossim", "l2_norm_in", "l2_norm_out", "l2_ratio", "l0", "l1",
             "ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation", "ce_loss_score",
             "kl_div_with_sae", "kl_div_with_ablation", "kl_div_score"]
    if batch_rows == contexts.shape[0]:  # SAELens averages this one over batches
        names.append("relative_reconstruction_bias")
    scalars = ours.scalars()
    for name in names:
        assert scalars[name] == pytest.approx(theirs[name], abs=1e-4, rel=1e-4), name
    assert torch.allclose(ours.feature_density.double(), torch.tensor(theirs["feature_density"]).double(),
                          atol=1e-6)
    assert ours.delta_lm_loss == pytest.approx(theirs["ce_loss_with_sae"] - theirs["ce_loss_without_sae"], abs=1e-4)
    assert ours.n_tokens == int((contexts != BOS).sum())


def test_sparsity_summaries() -> None:
    lm = build_tiny_lm(d_model=16, n_layers=2, d_vocab=50)
    sae = build_topk_sae(d_in=16, d_sae=32, k=4, hook_name=HOOK)
    ours = evaluate_spliced(lm, sae, HOOK, _contexts(), 3, [BOS])
    density = ours.feature_density
    assert ours.l0_quantiles == {"p10": 4.0, "p50": 4.0, "p90": 4.0, "max": 4.0}  # TopK: exactly k per token
    assert ours.dead_fraction == pytest.approx(float((density == 0).float().mean()))
    assert ours.dense_fraction == pytest.approx(float((density > 0.1).float().mean()))
    assert sum(ours.density_histogram) == int((density > 0).sum())


def test_a_perfect_sae_recovers_all_loss_and_the_wrong_width_is_refused() -> None:
    lm = build_tiny_lm(d_model=16, n_layers=2, d_vocab=50)

    class Identity(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cfg = type("Cfg", (), {"d_in": 16, "d_sae": 16})()
            self.w = torch.nn.Parameter(torch.eye(16))

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w

        def decode(self, f: torch.Tensor) -> torch.Tensor:
            return f @ self.w.T

    perfect = evaluate_spliced(lm, Identity(), HOOK, _contexts(), 3, [BOS])
    assert perfect.ce_loss_score == pytest.approx(1.0, abs=1e-5)
    assert perfect.kl_div_with_sae == pytest.approx(0.0, abs=1e-6)
    assert perfect.explained_variance == pytest.approx(1.0, abs=1e-6)
    wide = build_topk_sae(d_in=8, d_sae=32, k=4, hook_name=HOOK)
    with pytest.raises(ValueError, match="another model or hook"):
        evaluate_spliced(lm, wide, HOOK, _contexts(), 3, [BOS])


def test_rows_per_batch_bounds_the_logits() -> None:
    assert rows_per_batch(128, 262_144, 1 << 30, 64) == 1  # Gemma's vocabulary: one context at a time in 1 GiB
    assert rows_per_batch(128, 49_152, 1 << 30, 64) == 8
    assert rows_per_batch(128, 49_152, 1 << 40, 64) == 64
    assert rows_per_batch(4096, 262_144, 1 << 20, 64) == 1
