"""The SAE catalog: which SAEs exist, per model key and layer.

The catalog is the single source of truth for partitions. It is a YAML file (default: the
``catalog.yaml`` in this package; ``SAE_ASSETS_CATALOG`` points elsewhere) mapping a *model key*
(a language model plus an SAE family, named as Neuronpedia does: ``gemma-2-2b@gemmascope-res-16k``)
to the language model, the hook point, the layers that have an SAE, and where each SAE comes from:

- ``saelens``: a SAELens pretrained release + an SAE id template (``layer_{layer}/width_16k/canonical``);
- ``local``: a directory template holding SAELens directories (``cfg.json`` + weights);
- ``train``: trained by the platform itself (asset ``trained_sae``), with the SAE's shape given here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sae_assets import settings
from sae_assets.catalog.drop_folder import cached_with_drop_folder, default_drop_folder
from sae_assets.catalog.entries import (
    MODEL_KEY_PATTERN,
    Catalog,
    CatalogEntry,
    LanguageModelSpec,
    NeuronpediaIds,
    SaeLocation,
    SaeSourceKind,
    SaeSourceSpec,
    TrainSpec,
    parse_catalog,
    parse_entry,
    validate_model_key,
)
from sae_assets.catalog.errors import CatalogError
from sae_assets.catalog.yaml_file import read_text

__all__ = ["MODEL_KEY_PATTERN", "Catalog", "CatalogEntry", "CatalogError", "LanguageModelSpec", "NeuronpediaIds",
           "SaeLocation", "SaeSourceKind", "SaeSourceSpec", "TrainSpec", "catalog_path", "load_catalog",
           "parse_catalog", "parse_entry", "validate_model_key"]

DEFAULT_CATALOG_PATH = Path(__file__).with_name("catalog.yaml")


def catalog_path() -> Path:
    return Path(settings.nonempty(settings.CATALOG) or DEFAULT_CATALOG_PATH)


def load_catalog(path: str | Path | None = None, drop_folder: str | Path | None = None) -> Catalog:
    """Read the catalog (``SAE_ASSETS_CATALOG`` or the packaged default) plus the SAEs of the drop folder
    (:mod:`sae_assets.catalog.drop_folder`); re-read when the file or the folder changes."""
    p = Path(path) if path is not None else catalog_path()
    try:
        mtime_ns = p.stat().st_mtime_ns
    except OSError as err:
        raise CatalogError(f"SAE catalog {p} does not exist (set {settings.CATALOG} to a YAML file).") from err
    base = _load_cached(p.resolve(), mtime_ns)
    return cached_with_drop_folder(base, Path(drop_folder) if drop_folder is not None else default_drop_folder())


@lru_cache(maxsize=8)
def _load_cached(path: Path, _mtime_ns: int) -> Catalog:
    return parse_catalog(read_text(path), path)
