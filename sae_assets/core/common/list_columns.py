"""List columns of equal-length rows (decoder vectors, embeddings, profiles) as 2-D numpy arrays."""

from __future__ import annotations

import numpy as np
import polars as pl


def list_matrix(column: pl.Series, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """``column`` (list of numbers, every row the same length) -> ``[len(column), width]`` of ``dtype``, a copy."""
    if column.is_empty():
        return np.zeros((0, 0), dtype=dtype)
    width = pl.select(column.list.len().max()).item()
    return np.array(column.list.to_array(width).to_numpy(), dtype=dtype, copy=True)
