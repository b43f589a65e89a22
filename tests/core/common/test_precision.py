"""Matmul precision: what each setting resolves to, and that bf16 autocast reaches the products."""

from __future__ import annotations

import pytest
import torch

from sae_assets.core.common import precision
from sae_assets.core.common.precision import compute_dtype, matmul_precision, precision_name

CPU = torch.device("cpu")


def test_named_precisions_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert compute_dtype("float32", CPU) == torch.float32 and compute_dtype("bfloat16", CPU) == torch.bfloat16
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert compute_dtype("auto", CPU) == torch.bfloat16
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # emulated bf16 is slower: stay float32
    assert compute_dtype("auto", CPU) == torch.float32
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, auto, not 'fp8'"):
        compute_dtype("fp8", CPU)
    assert precision_name(torch.bfloat16) == "bfloat16 (autocast)" and precision_name(None) == "float32"


def test_native_bf16_is_false_on_a_torch_without_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(precision.native_bf16(CPU), bool)

    def missing() -> bool:
        raise AttributeError("no mkldnn")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", missing)
    assert precision.native_bf16(CPU) is False and compute_dtype("auto", CPU) == torch.float32


def test_autocast_runs_products_in_bf16_and_leaves_float32_alone() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64)
    with matmul_precision(torch.bfloat16, CPU):
        product = layer(x)
    assert product.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32  # the weights stay as loaded
    assert torch.allclose(product.float(), layer(x), rtol=0.02, atol=0.02)
    for dtype in (torch.float32, None):
        with matmul_precision(dtype, CPU):
            assert layer(x).dtype == torch.float32
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        with matmul_precision(torch.float16, CPU):
            pass
