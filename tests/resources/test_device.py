from __future__ import annotations

import pytest
import torch

from sae_assets.resources.device import DeviceResource, resolve_device, resolve_dtype


def test_auto_picks_cuda_only_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:1")


def test_dtypes() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype("float8", cpu)
    with pytest.raises(ValueError, match="Device must be"):
        resolve_device("tpu")


def test_resource() -> None:
    res = DeviceResource(device="cpu", dtype="float16")
    assert res.torch_device() == torch.device("cpu") and res.torch_dtype() == torch.float16
