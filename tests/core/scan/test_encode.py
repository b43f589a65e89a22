from __future__ import annotations

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from sae_assets.core.scan.encode import CheckedEncoder
from tests.builders import build_topk_sae


def _jumprelu(d_in: int = 16, d_sae: int = 64, apply_b_dec_to_input: bool = True) -> JumpReLUSAE:
    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=apply_b_dec_to_input))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        sae.threshold.copy_(torch.rand(d_sae) * 0.5 - 0.1)  # some thresholds below zero
    return sae


def test_fused_jumprelu_equals_saelens_bit_for_bit() -> None:
    for apply_b_dec in (True, False):
        sae = _jumprelu(apply_b_dec_to_input=apply_b_dec)
        encoder = CheckedEncoder(sae)
        x = torch.randn(200, 16)
        assert torch.equal(encoder(x), sae.encode(x)) and encoder.fused
        later = torch.randn(50, 16) * 3
        assert torch.equal(encoder(later), sae.encode(later))


def test_fused_topk_equals_saelens_bit_for_bit() -> None:
    for rescale in (True, False):
        sae = build_topk_sae(d_sae=64, k=5)
        sae.cfg.rescale_acts_by_decoder_norm = rescale
        with torch.no_grad():
            sae.W_dec.mul_(torch.rand(64, 1) + 0.5)  # decoder rows of unequal norm: rescaling changes the top k
        encoder = CheckedEncoder(sae)
        x = torch.randn(300, 16)
        assert torch.equal(encoder(x), sae.encode(x)) and encoder.fused
        later = torch.randn(40, 16) * 3
        latents = encoder(later)
        assert torch.equal(latents, sae.encode(later)) and int((latents != 0).sum(dim=1).max()) <= 5


def test_other_saes_and_a_differing_encoder_keep_saelens() -> None:
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    standard = StandardSAE(StandardSAEConfig(d_in=16, d_sae=32))
    encoder = CheckedEncoder(standard)
    x = torch.randn(10, 16)
    assert torch.equal(encoder(x), standard.encode(x)) and not encoder.fused
    topk = build_topk_sae()
    topk.encode = lambda v: type(topk).encode(topk, v) * 2.0  # e.g. a hook on the latents
    encoder = CheckedEncoder(topk)
    assert torch.equal(encoder(x), topk.encode(x)) and not encoder.fused
    sae = _jumprelu()
    sae.encode = lambda v: JumpReLUSAE.encode(sae, v) + 1.0  # e.g. a hook on the latents: the fused path differs
    encoder = CheckedEncoder(sae)
    assert torch.equal(encoder(x), sae.encode(x)) and not encoder.fused
    assert torch.equal(encoder(x * 2), sae.encode(x * 2))
