"""Matmul precision of model inference: float32, or bfloat16 autocast where the device multiplies bf16 natively.

Under bfloat16 autocast the matrix products (linear layers, attention) take bf16 inputs and accumulate in float32
inside the kernel; what the models hand back here is float32 (embeddings) or token ids (labels). On a CPU with
AVX-512 BF16 or AMX (oneDNN's bf16 kernels) that makes MiniLM embed ~2.7x as many texts per second and SmolLM2
write labels ~1.7x as fast on 2 cores; on a CPU without them bf16 is emulated and slower than float32, so ``auto``
keeps float32
there. Results move by bf16 rounding (an embedding's cosine to its float32 self: > 0.996), so float32 stays the
reference and every choice is recorded where it was used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

Precision = Literal["float32", "bfloat16", "auto"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "auto")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (CUDA: compute capability 8+; CPU: oneDNN's
    bf16 kernels, i.e. AVX-512 BF16 or AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``float32`` / ``bfloat16`` as named; ``auto``: bfloat16 where :func:`native_bf16`, else float32."""
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")


@contextlib.contextmanager
def matmul_precision(dtype: torch.dtype | None, device: torch.device) -> Iterator[None]:
    """bfloat16 autocast on ``device`` for ``dtype`` bfloat16; nothing changes for float32 or None."""
    if dtype is None or dtype == torch.float32:
        yield
        return
    if dtype != torch.bfloat16:
        raise ValueError(f"matmul precision is float32 or bfloat16, not {dtype}.")
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


def precision_name(dtype: torch.dtype | None) -> str:
    """What metadata records: ``float32`` or ``bfloat16 (autocast)``."""
    return "bfloat16 (autocast)" if dtype == torch.bfloat16 else "float32"
