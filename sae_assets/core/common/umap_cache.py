"""UMAP with its numba kernels compiled once per machine, not once per process.

umap-learn compiles its kernels (the fuzzy graph, the layout's epochs, the distances) with numba at first use
and, unlike pynndescent, does not cache them on disk: every fresh process pays about 7 s on 2 cores before the
first epoch (a 2,048-point UMAP: 9.6 s in a fresh process, 2.8 s once compiled). Under the multiprocess and k8s
executors every step is a fresh process. :func:`load_umap` turns numba's on-disk cache on for umap's module-level
kernels, so a second process on the machine loads them instead (2.8 s). :func:`use_cache_dir` points numba's cache
at a directory the platform owns (the kernels of site-packages may not be writable in a deployed image); numba
invalidates an entry when the source file changes, and writes entries atomically, so processes can share it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)
_LOCK = threading.Lock()


def use_cache_dir(path: str | Path) -> None:
    """Cache numba kernels compiled from now on under ``path``, unless the user set ``NUMBA_CACHE_DIR`` (numba's
    own variable wins). Kernels already compiled in this process keep where they were cached."""
    from numba.core import config

    if not getattr(config, "CACHE_DIR", ""):  # numba's settings are set at import, untyped
        Path(path).mkdir(parents=True, exist_ok=True)
        config.__dict__["CACHE_DIR"] = str(path)


def load_umap() -> ModuleType:
    """The ``umap`` module, with numba's on-disk cache enabled for every module-level kernel of umap-learn.
    Kernels umap builds inside a call (its per-metric closures) still compile per process."""
    import umap
    import umap.distances
    import umap.layouts
    import umap.spectral
    import umap.umap_
    import umap.utils
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    with _LOCK:
        for module in (umap.umap_, umap.layouts, umap.distances, umap.utils, umap.spectral):
            for kernel in vars(module).values():
                # A kernel whose cache is on no longer has a NullCache: each is enabled once per process.
                if isinstance(kernel, CPUDispatcher) and isinstance(getattr(kernel, "_cache", None), NullCache):
                    try:
                        kernel.enable_caching()
                    except RuntimeError as err:  # e.g. no writable cache location at all
                        log.info("numba cache not enabled for %s: %s", kernel.py_func.__qualname__, err)
    return umap
