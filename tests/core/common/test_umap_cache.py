"""UMAP's numba kernels are compiled by the first process and loaded from the platform's cache by the next."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN = """
import json, sys
import numpy as np
from sae_assets.core.common.umap_cache import load_umap, use_cache_dir
use_cache_dir(sys.argv[1])
umap = load_umap()
x = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
umap.UMAP(n_neighbors=10, n_components=2, random_state=0, n_epochs=20, n_jobs=1).fit_transform(x)
from numba.core.registry import CPUDispatcher
kernels = [k for m in (umap.umap_, umap.layouts) for k in vars(m).values() if isinstance(k, CPUDispatcher)]
print(json.dumps({k.py_func.__name__: [len(k.stats.cache_hits), len(k.stats.cache_misses)]
                  for k in kernels if k.signatures}))
"""
HEAVY = ("smooth_knn_dist", "compute_membership_strengths", "_optimize_layout_euclidean_single_epoch")
"""The kernels that take the compile time (the fuzzy graph and the layout's epochs)."""


@pytest.mark.slow
def test_a_second_process_loads_the_kernels_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "numba"

    def run() -> dict:
        out = subprocess.run([sys.executable, "-c", RUN, str(cache)], capture_output=True, text=True, check=True,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run()
    assert all(first[k] == [0, 1] for k in HEAVY), first  # compiled, then written to the cache
    assert any("umap" in p.name for p in cache.rglob("*.nbi"))
    second = run()
    assert all(second[k] == [1, 0] for k in HEAVY), second  # loaded, not compiled
