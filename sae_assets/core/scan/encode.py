"""SAE encoders that make fewer full-width temporaries than SAELens's, checked bit for bit against it.

At 16,384 latents a batch of 4,096 tokens has 67M pre-activations; SAELens's JumpReLU ``encode`` makes four
tensors of that size (pre-activations plus bias, ReLU, mask, product). The fused version adds the bias and
zeroes below the threshold in place: one tensor. The first call compares it with ``sae.encode`` and keeps
SAELens's own encoder on any difference (another version, hooks, a normalization), so results never change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)
Encoder = Callable[[torch.Tensor], torch.Tensor]


def _jumprelu(sae: Any) -> Encoder:
    def encode(x: torch.Tensor) -> torch.Tensor:  # [n, d_in] -> [n, d_sae]
        pre = sae.process_sae_in(x) @ sae.W_enc
        pre += sae.b_enc
        return pre.masked_fill_(~((pre > sae.threshold) & (pre > 0)), 0.0)

    return encode


class CheckedEncoder:
    """``sae.encode``, or a fused equivalent once the first batch shows it gives the same latents."""

    def __init__(self, sae: Any) -> None:
        self.sae = sae
        fused = _jumprelu(sae) if type(sae).__name__ == "JumpReLUSAE" and hasattr(sae, "threshold") else None
        self._candidate: Encoder | None = fused
        self._encode: Encoder = sae.encode
        self.fused = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._candidate is not None:
            candidate, self._candidate = self._candidate, None
            reference = self.sae.encode(x)
            if torch.equal(candidate(x), reference):
                self._encode, self.fused = candidate, True
            else:
                log.info("Fused %s encoder differs from SAELens's on the first batch; using SAELens's.",
                         type(self.sae).__name__)
            return reference
        return self._encode(x)
