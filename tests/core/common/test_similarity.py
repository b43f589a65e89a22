"""The similarity maths shared by SFAL / the k-NN (torch) and the viewer (numpy): the same results from both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae_assets.core.common.similarity import phi_rows, phi_scale, unit_rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unit_rows_agree_on_numpy_and_torch(dtype: type[np.floating]) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((60, 24)).astype(dtype)
    vectors[3] = 0  # no explanation: zeros
    vectors[4] = -0.0
    vectors[5, 7] = np.nan  # no norm: zeros as well
    vectors[6] *= 1e-20
    before = vectors.copy()
    ours, theirs = unit_rows(vectors), unit_rows(torch.from_numpy(vectors)).numpy()
    assert np.array_equal(vectors, before, equal_nan=True)  # a new array
    assert ours.dtype == theirs.dtype == dtype
    zero = np.isin(np.arange(60), [3, 4, 5])
    for unit in (ours, theirs):
        assert np.array_equal(unit[zero], np.zeros((3, 24), dtype=dtype)) and not np.signbit(unit[zero]).any()
        np.testing.assert_allclose(np.linalg.norm(unit[~zero].astype(np.float64), axis=1), 1.0,
                                   rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(ours, theirs, rtol=2 * np.finfo(dtype).eps, atol=0)


def test_phi_scale_is_the_correctly_rounded_inverse_square_root() -> None:
    """numpy's 1 / sqrt agrees with torch's rsqrt (SFAL's scale before it moved here) on every count."""
    n = 4096
    counts = np.arange(n + 1)
    scale = phi_scale(counts, n)
    spread = torch.from_numpy(counts * (n - counts.astype(np.float64)))
    assert scale[0] == scale[n] == 0  # undefined: in no window, in every window
    assert np.array_equal(scale[1:n], spread[1:n].rsqrt().numpy())


def test_phi_rows_give_the_same_bits_on_numpy_and_torch() -> None:
    """The numpy path (the viewer's) and torch's fused numerator (SFAL's) compute the same Phi."""
    rng = np.random.default_rng(9)
    presence = (rng.random((300, 50)) < rng.uniform(0.01, 0.4, 50)).astype(np.float64)
    presence[:, 0], presence[:, 1] = 0, 1  # in no window, in every window: Phi 0
    counts = presence.T @ presence
    marginals = np.diag(counts).copy()
    scale = phi_scale(marginals, 300)
    rows = [2, 0, 41, 1]
    ours = phi_rows(counts[rows].copy(), 300, marginals[rows], marginals, scale[rows], scale)
    t = torch.from_numpy
    theirs = phi_rows(t(counts[rows].copy()), 300, t(marginals[rows]), t(marginals), t(scale[rows]), t(scale))
    assert np.array_equal(ours, theirs.numpy())
    assert (ours[[1, 3]] == 0).all() and np.abs(ours).max() <= 1 + 1e-12
    assert ours[0, 2] == pytest.approx(1.0) and ours[2, 41] == pytest.approx(1.0)
