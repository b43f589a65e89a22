"""SAEs dropped into a folder become catalog entries.

Layout: ``<folder>/<model-key>/<layer>/`` holding a SAELens directory (``cfg.json`` + ``sae_weights.safetensors``).
A dropped model key shares its language model with a catalog entry of the same model (the part before ``@``:
``smollm2-135m@my-saes`` takes ``smollm2-135m@demo-res``'s language model); its hook comes from each
``cfg.json`` (``hook_name``, or ``metadata.hook_name`` as SAELens 6 writes it), with the layer number made
the ``{layer}`` placeholder. The entry's SAEs load as ``source: local`` from the folder.

A folder that cannot be used (bad key, layer name, a missing, unreadable or malformed ``cfg.json``, missing or
truncated weights: :mod:`sae_assets.catalog.sae_files`; a key the YAML catalog already has) is left out with its
reason in ``Catalog.errors``; the rest is still used.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from sae_assets import settings
from sae_assets.catalog.entries import Catalog, CatalogEntry, SaeSourceSpec, validate_model_key
from sae_assets.catalog.errors import CatalogError
from sae_assets.catalog.sae_files import SaeFileError, check_directory


def default_drop_folder() -> Path:
    """``SAE_ASSETS_SAE_DROP``, else ``$DAGSTER_HOME/sae_drop``, else the repo's ``dagster_home/sae_drop``."""
    if folder := settings.nonempty(settings.SAE_DROP):
        return Path(folder).expanduser()
    home = settings.get(settings.DAGSTER_HOME)
    home_dir = Path(home).expanduser() if home else Path(__file__).resolve().parents[2] / "dagster_home"
    return home_dir / "sae_drop"


@dataclass(frozen=True)
class DroppedSae:
    key: str
    layer: int
    path: Path
    hook_name: str
    d_in: int


def _read_layer_dir(key: str, layer_dir: Path) -> DroppedSae:
    """One ``<key>/<layer>/`` folder; raises CatalogError saying what is wrong with it."""
    if not layer_dir.name.isdigit():
        raise CatalogError(f"SAE folder {layer_dir}: the folder name must be a layer number.")
    layer = int(layer_dir.name)
    try:
        cfg = check_directory(layer_dir)
    except SaeFileError as err:
        raise CatalogError(str(err)) from err
    metadata = cfg["metadata"] if isinstance(cfg.get("metadata"), dict) else {}
    hook = cfg.get("hook_name") or metadata.get("hook_name")
    d_in = cfg["d_in"]
    if not isinstance(hook, str):
        raise CatalogError(f"SAE folder {layer_dir}: cfg.json needs 'hook_name' (or metadata.hook_name) as text.")
    if not re.search(rf"(^|\.){layer}(\.|$)", hook):
        raise CatalogError(f"SAE folder {layer_dir}: its hook {hook!r} is not at layer {layer}.")
    return DroppedSae(key, layer, layer_dir, hook, d_in)


def _subdirs(folder: Path, errors: dict[str, str]) -> list[Path]:
    """The visible sub-folders of ``folder``; none (and the reason in ``errors``) when it cannot be listed."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as err:
        errors[str(folder)] = f"SAE folder {folder} cannot be listed ({type(err).__name__}: {err})."
        return []


def scan_drop_folder(folder: Path) -> tuple[list[DroppedSae], dict[str, str]]:
    """Every usable ``<key>/<layer>/`` SAE under ``folder``, and the reason for each folder left out (by path)."""
    dropped: list[DroppedSae] = []
    errors: dict[str, str] = {}
    if not folder.is_dir():
        return dropped, errors
    for key_dir in _subdirs(folder, errors):
        try:
            validate_model_key(key_dir.name)
        except CatalogError as err:
            errors[str(key_dir)] = f"SAE folder {key_dir}: {err}"
            continue
        for layer_dir in _subdirs(key_dir, errors):
            try:
                dropped.append(_read_layer_dir(key_dir.name, layer_dir))
            except CatalogError as err:
                errors[str(layer_dir)] = str(err)
            except OSError as err:  # unreadable files: this folder is skipped, the others still load
                errors[str(layer_dir)] = f"SAE folder {layer_dir} cannot be read ({type(err).__name__}: {err})."
    return dropped, errors


def _entry(key: str, saes: list[DroppedSae], base: Catalog, folder: Path) -> CatalogEntry:
    if key in base.entries or key in base.errors:
        raise CatalogError(f"SAE folder {folder / key}: model key {key!r} is already in the SAE catalog "
                           f"{base.path}; rename the folder (e.g. {key}-drop) or remove the catalog entry.")
    model = key.split("@", 1)[0]
    bases = [e for k, e in sorted(base.entries.items()) if k.split("@", 1)[0] == model]
    if not bases:
        raise CatalogError(f"SAE folder {folder / key}: no catalog entry for model {model!r} to take the language "
                           f"model from; add one to {base.path} (any '{model}@...' key).")
    templates = {re.sub(rf"(^|\.){s.layer}(\.|$)", r"\g<1>{layer}\g<2>", s.hook_name, count=1) for s in saes}
    widths = {s.d_in for s in saes}
    if len(templates) > 1 or len(widths) > 1:
        raise CatalogError(f"SAE folder {folder / key}: its layers disagree on the hook ({sorted(templates)}) or "
                           f"d_in ({sorted(widths)}); one model key is one hook point.")
    d_in = widths.pop()
    if bases[0].d_model is not None and bases[0].d_model != d_in:
        raise CatalogError(f"SAE folder {folder / key}: d_in {d_in} differs from {model}'s width {bases[0].d_model}.")
    escaped = str(folder / key).replace("{", "{{").replace("}", "}}")
    return replace(bases[0], key=key, hook_template=templates.pop(), layers=tuple(sorted(s.layer for s in saes)),
                   sae=SaeSourceSpec(kind="local", path_template=escaped + "/{layer}"), d_model=d_in,
                   neuronpedia=None, description=f"SAEs dropped in {folder / key}")


def with_drop_folder(base: Catalog, folder: Path) -> Catalog:
    """``base`` plus the entries of the SAEs in ``folder`` (errors of both kept)."""
    dropped, errors = scan_drop_folder(folder)
    by_key: dict[str, list[DroppedSae]] = defaultdict(list)
    for sae in dropped:
        by_key[sae.key].append(sae)
    entries = dict(base.entries)
    for key, saes in sorted(by_key.items()):
        try:
            entries[key] = _entry(key, saes, base, folder)
        except CatalogError as err:
            errors[str(folder / key)] = str(err)
    return Catalog(entries=entries, path=base.path, errors={**base.errors, **errors})


def folder_signature(folder: Path) -> tuple:
    """Changes whenever a ``<key>/<layer>/`` folder or its cfg.json/weights appear, go or change."""
    if not folder.is_dir():
        return ()
    items = []
    for cfg in sorted(folder.glob("*/*/*")):
        try:
            items.append((str(cfg.relative_to(folder)), cfg.stat().st_mtime_ns))
        except OSError:
            continue
    return tuple(items)


_CACHE: dict[tuple, tuple[Catalog, Catalog]] = {}  # key -> (base, merged): holding base keeps its id unique


def cached_with_drop_folder(base: Catalog, folder: Path) -> Catalog:
    """:func:`with_drop_folder`, recomputed only when ``base`` or the folder's contents changed."""
    key = (id(base), str(folder), folder_signature(folder))
    cached = _CACHE.get(key)
    if cached is None:
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        cached = _CACHE[key] = (base, with_drop_folder(base, folder))
    return cached[1]
