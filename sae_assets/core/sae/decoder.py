"""The decoder matrix of an SAE as a table: one row per feature."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from sae_assets.core.common.list_columns import list_matrix


def decoder_frame(w_dec: torch.Tensor) -> pl.DataFrame:
    """``w_dec [d_sae, d_in]`` -> columns ``feature`` (int32), ``decoder`` (list<f32>), ``decoder_norm``.

    Vectors are stored as ``pl.List(pl.Float32)`` (``pl.Array`` columns break ``pl.read_delta``);
    ``.list.to_array(d_in)`` rebuilds the fixed width, and the float32 values round-trip bit-exactly.
    """
    if w_dec.ndim != 2:
        raise ValueError(f"W_dec must be [d_sae, d_in], got shape {tuple(w_dec.shape)}")
    w = w_dec.detach().to(device="cpu", dtype=torch.float32).contiguous()
    d_sae, d_in = w.shape
    flat = pl.Series("flat", w.numpy().reshape(-1), dtype=pl.Float32)
    decoder = pl.Series("decoder", flat.reshape((d_sae, d_in))).cast(pl.List(pl.Float32))
    return pl.DataFrame({
        "feature": pl.Series("feature", range(d_sae), dtype=pl.Int32),
        "decoder": decoder,
        "decoder_norm": pl.Series("decoder_norm", w.norm(dim=1).numpy(), dtype=pl.Float32),
    })


def decoder_matrix(frame: pl.DataFrame) -> torch.Tensor:
    """Inverse of :func:`decoder_frame`: ``[d_sae, d_in]`` float32, rows ordered by ``feature``."""
    frame = frame.sort("feature")
    return torch.from_numpy(list_matrix(frame["decoder"], np.float32))
