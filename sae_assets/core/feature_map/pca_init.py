"""UMAP's ``pca`` initial layout, computed in torch from a few passes over the vectors.

umap-learn's ``init="pca"`` runs scikit-learn's PCA on the whole ``[n, dim]`` matrix (a randomized SVD with
seven power iterations, plus copies of the matrix for centring and validation: 1.6 s at 16,384 x 2,304 on 2 cores)
and then hands the layout on. :func:`pca_layout` gives the same thing, the centred vectors' first principal
components scaled and jittered as umap-learn does, from a seeded randomized range finder that never materialises
the centred matrix: ``(iterations + 1) x 2`` thin products with the ``[n, dim]`` vectors (0.3 s there). The layout
is only UMAP's starting point: what matters is that it is deterministic and spreads the points along their main
directions of variance (``benchmarks/feature_map.py`` compares the trustworthiness of the final maps).
"""

from __future__ import annotations

import numpy as np
import torch

OVERSAMPLE = 10
"""Extra random directions of the range finder beyond the components asked for (scikit-learn's default)."""
POWER_ITERATIONS = 4
"""Power iterations of the range finder: the leading components of a decoder matrix separate within a few."""
MAX_COORD = 10.0
"""Largest absolute coordinate of the scaled layout (umap-learn's ``noisy_scale_coords``)."""
NOISE = 1e-4
"""Standard deviation of the jitter added after scaling, so no two points start at the same place (umap-learn's)."""


def principal_scores(vectors: torch.Tensor, n_components: int, seed: int) -> torch.Tensor:
    """``vectors [n, dim]`` -> ``[n, n_components]`` float32 scores on the first principal components of the centred
    vectors (largest variance first), each column's sign fixed so that its largest-magnitude entry is positive.

    A randomized SVD (Halko et al.): an orthonormal basis ``Q [n, l]`` of the centred matrix's range from
    ``l = n_components + OVERSAMPLE`` seeded Gaussian directions and ``POWER_ITERATIONS`` power iterations, then the
    exact SVD of the small ``Q^T X_c [l, dim]``. Centring is folded into the products (``X_c y = X y - mean (1^T y)``),
    so memory is the vectors plus ``[n, l]``."""
    x = vectors.to(torch.float32)
    n, dim = x.shape
    if n_components < 1 or n_components > min(n, dim):
        raise ValueError(f"n_components must be in [1, {min(n, dim)}], not {n_components}")
    mean = x.mean(dim=0)  # [dim]
    width = min(n_components + OVERSAMPLE, n, dim)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    directions = torch.randn(dim, width, generator=generator).to(x.device)  # [dim, l]

    def times(right: torch.Tensor) -> torch.Tensor:  # X_c @ right: [n, l]
        return x @ right - mean @ right

    def transposed_times(left: torch.Tensor) -> torch.Tensor:  # X_c^T @ left: [dim, l]
        return x.T @ left - torch.outer(mean, left.sum(dim=0))

    basis = torch.linalg.qr(times(directions)).Q
    for _ in range(POWER_ITERATIONS):
        basis = torch.linalg.qr(times(torch.linalg.qr(transposed_times(basis)).Q)).Q
    small = transposed_times(basis).T  # Q^T X_c: [l, dim]
    left, singular, _ = torch.linalg.svd(small, full_matrices=False)
    scores = (basis @ left[:, :n_components]) * singular[:n_components]  # [n, c]
    largest = scores.abs().argmax(dim=0)
    signs = torch.sign(scores[largest, torch.arange(n_components, device=x.device)])
    return scores * torch.where(signs == 0, torch.ones_like(signs), signs)


def pca_layout(vectors: torch.Tensor, n_components: int, seed: int) -> np.ndarray:
    """UMAP's initial layout ``[n, n_components]`` float32: :func:`principal_scores`, scaled so that the largest
    absolute coordinate is ``MAX_COORD``, plus Gaussian jitter of ``NOISE`` from ``numpy.random.RandomState(seed)``."""
    scores = principal_scores(vectors, n_components, seed).cpu().numpy().astype(np.float64)
    peak = np.abs(scores).max()
    scaled = np.asarray(scores * (MAX_COORD / peak if peak > 0 else 1.0), dtype=np.float32)
    return scaled + np.random.RandomState(seed).normal(scale=NOISE, size=scaled.shape).astype(np.float32)
