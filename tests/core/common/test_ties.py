"""The tie grid: rounding noise snaps away, real differences stay, numpy and torch give the same bits."""

from __future__ import annotations

import numpy as np
import torch

from sae_assets.core.common.ties import TIE_GRID, snap


def test_rounding_noise_snaps_to_one_value() -> None:
    noisy = np.array([0.9999999999999998, 1.0, 1.0000000000000002, -0.0, 0.0, 1e-17, -1e-17])
    assert snap(noisy).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 10_000)
    ulps = x + np.spacing(x) * rng.integers(-8, 9, x.shape)
    assert (snap(ulps) == snap(x)).mean() > 0.999  # all but values within 8 ulps of a cell's edge


def test_the_grid_is_2_to_the_minus_30_with_halves_to_even() -> None:
    assert TIE_GRID == 2.0**-30
    assert snap(np.array([0.5 * TIE_GRID, 1.5 * TIE_GRID, 0.49 * TIE_GRID, 0.51 * TIE_GRID])).tolist() == [
        0.0, 2 * TIE_GRID, 0.0, TIE_GRID]
    apart = snap(np.array([0.3, 0.3 + 2 * TIE_GRID]))
    assert apart[1] - apart[0] == 2 * TIE_GRID  # two grid steps apart: not a tie
    assert snap(np.array([-np.inf, np.inf, np.nan]))[:2].tolist() == [-np.inf, np.inf]
    assert np.isnan(snap(np.array([np.nan]))[0])


def test_numpy_and_torch_snap_to_the_same_bits_in_place_or_not() -> None:
    x = np.random.default_rng(1).standard_normal((50, 40)) / 3
    expected = np.round(x * 2**30) / 2**30
    assert np.array_equal(snap(x), expected)
    t = torch.from_numpy(x.copy())
    assert torch.equal(snap(t), torch.from_numpy(expected))
    out = snap(t, in_place=True)
    assert out is t and torch.equal(t, torch.from_numpy(expected))
    y = x.copy()
    assert snap(y, in_place=True) is y and np.array_equal(y, expected)
    assert snap(np.float32([0.1])).dtype == np.float32
