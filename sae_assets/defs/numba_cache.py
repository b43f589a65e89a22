"""Where the UMAP assets cache numba's compiled kernels: ``<files>/cache/numba``, a directory the platform owns
(see ``core/common/umap_cache.py``; ``NUMBA_CACHE_DIR`` overrides it)."""

import logging

from sae_assets.core.common.umap_cache import use_cache_dir
from sae_assets.resources.lake import LakeResource

log = logging.getLogger(__name__)


def use_platform_numba_cache(lake: LakeResource) -> None:
    """Cache numba kernels under the lake's local files directory; keep numba's default without one."""
    try:
        use_cache_dir(lake.local_dir("cache", "numba"))
    except (ValueError, OSError) as err:  # a remote lake without SAE_ASSETS_FILES, or a read-only mount
        log.info("numba kernels cached in numba's default location: %s", err)
