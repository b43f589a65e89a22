from __future__ import annotations

import pytest

from sae_assets.core.scan.activation_examples import ExampleConfig
from sae_assets.core.scan.activation_scan import ScanConfig
from sae_assets.core.scan.memory import GIB, check_scan_memory, estimate_scan_memory

CFG = ScanConfig(batch_tokens=4096, profile_documents=1024, examples=ExampleConfig(top_k=20, reservoir=64, radius=16))


def test_the_counts_are_the_quadratic_part() -> None:
    small, wide = estimate_scan_memory(16_384, CFG), estimate_scan_memory(32_768, CFG)
    assert small.cooccurrence == GIB and wide.cooccurrence == 4 * GIB
    assert wide.batch == 2 * small.batch and wide.examples == 2 * small.examples


def test_a_width_that_does_not_fit_says_what_to_lower() -> None:
    need = estimate_scan_memory(16_384, CFG)
    assert check_scan_memory(16_384, CFG, need.total, "cpu") == need
    with pytest.raises(ValueError, match=r"16,384 latents needs about .* GiB on cpu .* lower batch_tokens to [\d,]+ "
                                         r"or less \(now 4,096\)"):
        check_scan_memory(16_384, CFG, need.total - need.batch // 2, "cpu")
    with pytest.raises(ValueError, match="co-occurrence counts alone need 4 x d_sae"):
        check_scan_memory(32_768, CFG, 3 * GIB, "cuda:0")
