"""The exact k-NN's answer from its float32 screen: candidates re-scored in float64 and snapped, with a certificate.

The blocked product over all pairs (:func:`~sae_assets.core.feature_map.knn.exact_knn`) runs in float32: fast, but
its rounding (up to about dim x 2^-24) is larger than the gap between near-equal neighbours and makes exact ties
(duplicate decoder rows) look unequal in whichever direction the block's rounding falls. So the screen keeps
k + slack candidates per row, and they are ranked here by their similarity recomputed in float64 from the same float32
unit rows (products of float32 values are exact in float64, so only float64 rounding is left, ~1e-16), snapped to the
tie grid (:mod:`~sae_assets.core.common.ties`), ties broken by index ascending.

A row's answer is certified when its k-th value is above anything the screen left out could reach: a left-out
entry's float32 value is at most the last candidate's, and its float64 value at most :func:`screen_error` above
that. Rows that fail (ties or near-ties running past the candidates, e.g. a zero row tied at 0 with everything)
are recomputed whole in float64, so the result is exact either way.
"""

from __future__ import annotations

import math

import torch

from sae_assets.core.common.ranking import top_order
from sae_assets.core.common.ties import TIE_GRID, snap

RESCORE_BYTES = 1 << 26
"""float64 temporaries per step of the re-scoring (candidate rows, whole rows): 64 MiB whatever the layer's size."""


def screen_error(dim: int, device: torch.device) -> float:
    """A bound on |float32 product - float64 product| of two float32 unit rows of length ``dim`` on ``device``:
    ``2 (dim + 2) 2^-24``, twice the classical bound ``dim u / (1 - dim u)`` on a dot product's rounding in any
    summation order, plus the unit rows' own norm error. Infinite where torch may multiply float32 matrices in TF32 or
    bf16 (``torch.set_float32_matmul_precision``, CUDA's ``allow_tf32``): nothing is certified, every row is
    recomputed in float64."""
    reduced = torch.get_float32_matmul_precision() != "highest" or (
        device.type == "cuda" and bool(torch.backends.cuda.matmul.allow_tf32))
    return math.inf if reduced else 2 * (dim + 2) * 2.0**-24


def rescored_neighbours(unit: torch.Tensor, candidates: torch.Tensor, screened: torch.Tensor,
                        k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``unit [n, dim]`` float32 unit rows, each row's ``candidates [n, c]`` from the screen (``c >= k``, self not
    among them) and their float32 similarities ``screened [n, c]`` in descending order -> ``(indices [n, k] int64,
    similarities [n, k] float64)``: each row's first k of all n - 1 others by snapped float64 similarity
    descending, ties by index ascending."""
    n, dim = unit.shape
    c = candidates.shape[1]
    indices = torch.empty((n, k), dtype=torch.int64, device=unit.device)
    sims = torch.empty((n, k), dtype=torch.float64, device=unit.device)
    step = max(1, RESCORE_BYTES // (12 * c * dim))  # the candidates' rows in float32, then float64
    for s in range(0, n, step):
        e = min(s + step, n)
        cols = candidates[s:e].sort(dim=1).values  # by index, so that a stable sort by value breaks ties by index
        values = torch.bmm(unit[cols].double(), unit[s:e].double()[:, :, None])[:, :, 0]  # [b, c]
        snap(values, in_place=True)
        order = values.sort(dim=1, descending=True, stable=True).indices[:, :k]
        indices[s:e], sims[s:e] = cols.gather(1, order), values.gather(1, order)
    if c < n - 1:  # others were left out: certify
        reach = screened[:, -1].double() + screen_error(dim, unit.device) + TIE_GRID
        unsure = (sims[:, -1] <= reach).nonzero().flatten()
        if unsure.numel():
            indices[unsure], sims[unsure] = whole_rows(unit, unsure, k)
    return indices, sims


def whole_rows(unit: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest others of ``rows`` of ``unit [n, dim]`` from their whole rows of snapped float64 similarities
    (self excluded; ties by index ascending): ``(indices [len(rows), k], similarities [len(rows), k] float64)``."""
    n = unit.shape[0]
    per_step = max(1, RESCORE_BYTES // (8 * n))
    column_step = max(1, RESCORE_BYTES // (8 * unit.shape[1]))
    indices, sims = [], []
    for s in range(0, rows.shape[0], per_step):
        r = rows[s : s + per_step]
        left = unit[r].double()
        values = torch.empty((r.shape[0], n), dtype=torch.float64, device=unit.device)
        for c in range(0, n, column_step):
            values[:, c : c + column_step] = left @ unit[c : c + column_step].double().T
        snap(values, in_place=True)
        values[torch.arange(r.shape[0], device=unit.device), r] = -torch.inf  # never its own neighbour
        top = top_order(values, k)
        indices.append(top)
        sims.append(values.gather(1, top))
    return torch.cat(indices), torch.cat(sims)
