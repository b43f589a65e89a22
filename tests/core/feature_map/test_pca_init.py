"""UMAP's PCA initial layout in torch: scikit-learn's principal components, seeded, scaled like umap-learn's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from sae_assets.core.feature_map.pca_init import MAX_COORD, pca_layout, principal_scores


def anisotropic(n: int = 400, dim: int = 48, seed: int = 0) -> np.ndarray:
    """Rows with three clearly separated directions of variance, off-centre."""
    rng = np.random.default_rng(seed)
    scales = np.r_[6.0, 3.0, 1.5, np.full(dim - 3, 0.2)]
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    return (rng.normal(size=(n, dim)) * scales @ basis.T + 2.0).astype(np.float32)


def test_principal_scores_equal_sklearn_pca_up_to_sign() -> None:
    x = anisotropic()
    ours = principal_scores(torch.from_numpy(x), 3, seed=0).numpy()
    ref = PCA(n_components=3, svd_solver="full").fit_transform(x.astype(np.float64))
    for c in range(3):
        sign = np.sign(ours[:, c] @ ref[:, c])
        np.testing.assert_allclose(ours[:, c], sign * ref[:, c], atol=1e-3 * np.abs(ref[:, c]).max())
        assert ours[np.abs(ours[:, c]).argmax(), c] > 0  # sign convention: largest entry positive
    assert ours.std(axis=0)[0] > ours.std(axis=0)[1] > ours.std(axis=0)[2]  # largest variance first


def test_pca_layout_is_seeded_scaled_and_jittered() -> None:
    x = torch.from_numpy(anisotropic())
    layout = pca_layout(x, 3, seed=7)
    assert layout.shape == (400, 3) and layout.dtype == np.float32
    np.testing.assert_array_equal(layout, pca_layout(x, 3, seed=7))
    assert abs(np.abs(layout).max() - MAX_COORD) < 1e-3
    duplicated = torch.cat([x[:1], x[:1], x[2:]])  # two equal rows start at different places
    twins = pca_layout(duplicated, 3, seed=7)
    assert not np.array_equal(twins[0], twins[1]) and np.abs(twins[0] - twins[1]).max() < 1e-2


def test_principal_scores_rejects_too_many_components() -> None:
    with pytest.raises(ValueError, match="n_components"):
        principal_scores(torch.zeros(5, 2), 3, seed=0)
