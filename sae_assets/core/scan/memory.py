"""What a scan will hold in memory, estimated before it starts, so a width that cannot fit fails at once with
what to lower instead of being killed by the kernel an hour in.

The co-occurrence counts are the one part quadratic in ``d_sae`` (4 d_sae^2 bytes); the rest is linear in it:
each batch's latents and the SAE's encode temporaries (``batch_tokens x d_sae``), the example buffers
(``(top_k + reservoir) x d_sae x window``) and the activation profiles (``profile_documents x d_sae``).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch

from sae_assets.core.scan.activation_scan import ScanConfig
from sae_assets.core.scan.cooccurrence import counts_bytes

GIB = 1024**3
BATCH_COPIES = 5
"""float32 ``[batch_tokens, d_sae]`` tensors alive at once in a batch: the SAE's pre-activations and mask, the
latents, the padded per-document latents and a reduction's temporary."""


@dataclass(frozen=True)
class ScanMemory:
    cooccurrence: int
    batch: int
    examples: int
    profiles: int

    @property
    def total(self) -> int:
        return self.cooccurrence + self.batch + self.examples + self.profiles

    def describe(self) -> str:
        return (f"co-occurrence counts {self.cooccurrence / GIB:.1f} GiB, batches {self.batch / GIB:.1f} GiB, "
                f"example buffers {self.examples / GIB:.1f} GiB, profiles {self.profiles / GIB:.1f} GiB")


def estimate_scan_memory(d_sae: int, cfg: ScanConfig) -> ScanMemory:
    ex = cfg.examples
    width = 2 * ex.radius + 1
    return ScanMemory(
        cooccurrence=counts_bytes(d_sae),
        batch=4 * BATCH_COPIES * cfg.batch_tokens * d_sae,
        # acts float32 + token ids int32 per buffered window, twice while a merge builds the new buffer
        examples=2 * (ex.top_k + ex.reservoir) * d_sae * width * 8 + ex.n_random * width * d_sae * 4,
        profiles=4 * cfg.profile_documents * d_sae,
    )


def check_scan_memory(d_sae: int, cfg: ScanConfig, available: int, where: str) -> ScanMemory:
    """The estimate, or ValueError saying what to lower when it exceeds ``available`` bytes on ``where``."""
    need = estimate_scan_memory(d_sae, cfg)
    if need.total <= available:
        return need
    fixed = need.cooccurrence + need.profiles
    if fixed > available:
        advice = (f"the co-occurrence counts alone need 4 x d_sae^2 bytes: run it on a device with more memory "
                  f"(profile_documents {cfg.profile_documents:,} also costs {need.profiles / GIB:.1f} GiB)")
    else:
        room = available - fixed - need.examples
        batch_tokens = max(0, room // (4 * BATCH_COPIES * d_sae))
        advice = (f"lower batch_tokens to {batch_tokens:,} or less (now {cfg.batch_tokens:,})" if batch_tokens
                  >= 256 else "lower batch_tokens, reservoir and top_k, or use a device with more memory")
    raise ValueError(f"A scan of {d_sae:,} latents needs about {need.total / GIB:.1f} GiB on {where} "
                     f"({need.describe()}) but {available / GIB:.1f} GiB are free: {advice}.")


def free_bytes(device: torch.device) -> int:
    """Memory a scan can still take on ``device``: free CUDA memory, or the host's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)
