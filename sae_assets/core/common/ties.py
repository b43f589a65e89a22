"""Ties in rankings by similarity: values that round to the same point of a fixed grid are equal.

Similarities (cosines, Phi: values in [-1, 1]) come out of blocked float64 products whose rounding depends on where
a value falls in the block: ``torch.mm`` of a unit row with two identical unit rows can give 0.9999999999999998 in
one column and 1.0000000000000002 in the other. Values equal in exact arithmetic (duplicate explanations,
equal co-occurrence counts) then differ in their last bits, and an order by them follows the rounding. So every
ranking by similarity (SFAL's NDCG, the feature map's k-NN, the viewer's partners and neighbours) ranks
``snap(x)``: ``x`` rounded to the nearest multiple of :data:`TIE_GRID` = 2^-30 (about 9.3e-10; halves to even), and
values with the same snapped value are ties.

Why a grid and why 2^-30:

- A grid makes "tied" an equivalence (values on one point tie, whatever else is in the row), so tie groups are
  well defined; "within tolerance of each other" is not transitive and would make groups depend on chains.
- The rounding noise of these float64 values is about 1e-16, at most ~1e-13 for a dot product of thousands of
  terms: four to seven orders of magnitude below the grid, so values equal in exact arithmetic snap to the same
  point unless they lie within that noise of a cell's edge (an odd multiple of 2^-31): roughly one chance in 10^7
  for noise of 1e-16.
- Differences below the grid carry no information: explanation embeddings come from float32 models (resolution
  ~6e-8 near 1), and a Phi moves by about 1/N when one of N windows changes.
- A power of two: multiplying and dividing by it are exact, so ``round(x * 2**30) / 2**30`` rounds once and gives
  the same bits in numpy and torch, on any device, and in an independent implementation.

The grid is absolute, for values of magnitude up to about 1 (larger ones snap too, but 2^-30 is then below their
own precision). -inf, +inf and NaN are left as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

from sae_assets.core.common.similarity import array_namespace

if TYPE_CHECKING:
    import torch

Array = TypeVar("Array", np.ndarray, "torch.Tensor")

TIE_GRID_BITS = 30
TIE_GRID = 2.0**-TIE_GRID_BITS
"""Spacing of the grid similarities are snapped to before ranking: values on one point of it are ties."""


def snap(values: Array, in_place: bool = False) -> Array:
    """``values`` (float numpy array or torch tensor) rounded to the nearest multiple of :data:`TIE_GRID`, halves to
    even: a new array of the same dtype and device, or ``values`` itself rewritten when ``in_place``."""
    scale = float(2**TIE_GRID_BITS)
    xp = array_namespace(values)
    if not in_place:
        return xp.round(values * scale) / scale
    values *= scale
    xp.round(values, out=values)
    values /= scale
    return values
