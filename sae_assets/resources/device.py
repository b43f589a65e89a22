"""Where tensors live: ``auto | cpu | cuda[:n]`` and a dtype."""

from __future__ import annotations

import dagster as dg
import torch
from pydantic import Field

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"Device must be 'auto', 'cpu' or 'cuda[:n]', not {name!r}.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {name!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'.")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU that supports it and float32 elsewhere."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, not {name!r}.")
    return DTYPES[name]


class DeviceResource(dg.ConfigurableResource):
    """The compute device and dtype for language models and SAEs."""

    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    dtype: str = Field(default="auto", description="auto | float32 | bfloat16 | float16")

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype, self.torch_device())
