"""Feature similarity maths written once for the pipeline (torch) and the viewer (numpy): unit rows for cosine
similarity, and the phi coefficient from co-occurrence counts.

:func:`unit_rows` and :func:`phi_rows` take numpy arrays or torch tensors alike and return the same kind, with the
same arithmetic in the same order; :func:`phi_scale` is numpy's for both (d values per call). So SFAL's blocks and
the viewer's feature page get the same Phi bits from the same counts. This module imports no torch (the viewer's
process never loads it): a tensor's own library is found from the tensor.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Array = TypeVar("Array", np.ndarray, "torch.Tensor")


def array_namespace(array: np.ndarray | torch.Tensor) -> ModuleType:
    """``numpy`` for a numpy array, else the (already imported) library the array's type comes from: ``torch``."""
    if isinstance(array, np.ndarray):
        return np
    return sys.modules[type(array).__module__.partition(".")[0]]


def unit_rows(vectors: Array) -> Array:
    """``[n, dim]`` -> ``v / ||v||`` per row, a new array in ``vectors``' dtype and device; rows whose norm is not
    positive (zeros, NaN) come out as zeros, whose cosine with anything is 0 (SFAL's rule for a feature without an
    explanation). Cast first for the precision wanted (SFAL: float64; k-NN and the viewer: float32)."""
    xp = array_namespace(vectors)
    norms = xp.linalg.vector_norm(vectors, axis=1, keepdims=True)  # [n, 1]
    defined = norms > 0
    unit = vectors / xp.where(defined, norms, 1)  # [n, dim]
    unit[~defined[:, 0]] = 0
    return unit


def phi_scale(marginals: np.ndarray, n_windows: int) -> np.ndarray:
    """Window counts ``c [d]`` of each feature over ``N = n_windows`` windows -> ``1 / sqrt(c (N - c))`` ``[d]``
    float64, 0 where the coefficient is undefined (a feature present in no window or in every one).

    numpy only, for torch callers too (``torch.from_numpy``: d values, once per block): its square root and division
    are correctly rounded, which torch's float64 ``sqrt`` is not on every CPU (AVX-512: ~1% of values differ)."""
    c = np.asarray(marginals, dtype=np.float64)
    spread = c * (n_windows - c)
    defined = spread > 0
    return np.where(defined, 1 / np.sqrt(np.where(defined, spread, 1.0)), 0.0)


def phi_rows(block: Array, n_windows: int, c_rows: Array, c_cols: Array, scale_rows: Array,
             scale_cols: Array) -> Array:
    """Phi coefficients, in place: ``block [b, m]`` float64 holding co-occurrence counts ``c_ij`` (windows where
    both are present) of features ``i`` (rows, window counts ``c_rows [b]``) and ``j`` (columns, ``c_cols [m]``) ->

        ``phi_ij = (N c_ij - c_i c_j) / sqrt(c_i (N - c_i) c_j (N - c_j))``, in [-1, 1],

    evaluated as ``(N c_ij - c_i c_j) * s_i * s_j`` with ``s = scale_*`` from :func:`phi_scale` (0 where undefined).
    The numerator's terms are integers below 2^53, exact however they are evaluated (torch fuses them into one pass
    over the block); the two scalings, in this order, are the only rounding steps. Returns ``block``."""
    if isinstance(block, np.ndarray):
        block *= n_windows
        block -= np.multiply.outer(c_rows, c_cols)
    else:
        block.addr_(c_rows, c_cols, beta=n_windows, alpha=-1)
    block *= scale_rows[:, None]
    block *= scale_cols[None, :]
    return block
