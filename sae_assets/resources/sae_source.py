"""SAEs through SAELens: a pretrained release, a local SAELens directory, or one the platform trained."""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from sae_assets.catalog import SaeLocation
from sae_assets.catalog.sae_files import CFG_FILE, SaeFileError, check_directory
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource

log = logging.getLogger(__name__)

TRAINED_SAE_DIR = "trained_saes"


class SaeLoadError(RuntimeError):
    """An SAE could not be loaded; the message says what to fix."""


@dataclass
class LoadedSae:
    sae: Any
    """A SAELens ``SAE`` (``encode``/``decode``, ``W_dec [d_sae, d_in]``)."""
    location: SaeLocation
    source: str
    """Human-readable origin (release + id, or directory)."""

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def architecture(self) -> str:
        return str(self.sae.cfg.architecture())

    @property
    def hook_name(self) -> str:
        return self.sae.cfg.metadata.hook_name or self.location.hook_name


def trained_sae_dir(lake_root: Path, model_key: str, layer: int) -> Path:
    return lake_root / TRAINED_SAE_DIR / model_key / f"layer-{layer}"


def saelens_repo_id(release: str | None) -> str | None:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory().get(release) if release else None
    return entry.repo_id if entry is not None else None


def _load_pretrained(location: SaeLocation, device: str) -> tuple[Any, str]:
    from sae_lens import SAE

    release, sae_id = location.entry.sae.release, location.entry.sae_id(location.layer)
    repo = saelens_repo_id(release)
    if repo is None:
        raise SaeLoadError(f"SAELens has no pretrained release {release!r} (model key {location.model_key!r}); "
                           "check the catalog's sae.release against SAELens's pretrained_saes.yaml.")
    try:
        sae = SAE.from_pretrained(release, sae_id, device=device)
    except ValueError as err:
        raise SaeLoadError(f"SAELens release {release!r} has no SAE {sae_id!r}: {err}") from err
    except Exception as err:  # hub errors come as OSError, requests/httpx errors or HF's own classes
        raise SaeLoadError(
            f"Could not download SAE {sae_id!r} of release {release!r} from the Hugging Face hub repo "
            f"{repo!r} ({type(err).__name__}: {err}). Check network access to the hub (HF_HUB_OFFLINE, "
            "proxies) or point the catalog entry at a local SAELens directory."
        ) from err
    return sae, f"SAELens {release} / {sae_id} ({repo})"


def _load_directory(path: Path, what: str, device: str) -> Any:
    """A SAELens directory, its cfg.json and weights checked first (:mod:`sae_assets.catalog.sae_files`), so a
    malformed field or a truncated weights file fails with the file and the field named."""
    from sae_lens import SAE
    from sae_lens.registry import SAE_CLASS_REGISTRY

    if not (path / CFG_FILE).exists():
        raise SaeLoadError(f"{what}: no SAELens directory at {path} (cfg.json missing).")
    try:
        cfg = check_directory(path)
    except SaeFileError as err:
        raise SaeLoadError(f"{what}: {err}") from err
    architecture = cfg.get("architecture")
    if architecture is not None and architecture not in SAE_CLASS_REGISTRY:
        raise SaeLoadError(f"{what}: {path / CFG_FILE}: 'architecture' {architecture!r} is not one SAELens knows "
                           f"({', '.join(sorted(SAE_CLASS_REGISTRY))}): fix the field or re-save the SAE.")
    try:
        return SAE.load_from_disk(str(path), device=device)
    except KeyError as err:  # SAELens indexes cfg.json's fields directly
        raise SaeLoadError(f"{what}: {path / CFG_FILE} lacks the field {err.args[0]!r} that SAELens needs to load "
                           "it: add it or re-save the SAE with SAELens.") from err
    except Exception as err:
        raise SaeLoadError(f"{what}: could not load the SAELens directory {path} "
                           f"({type(err).__name__}: {err}).") from err


class SaeSourceResource(dg.ConfigurableResource):
    """Loads the SAE the catalog names for a partition."""

    device: DeviceResource
    lake: LakeResource

    def trained_dir(self, location: SaeLocation) -> Path:
        return trained_sae_dir(self.lake.local_dir(), location.model_key, location.layer)

    def store_trained(self, location: SaeLocation, sae: Any) -> Path:
        """Save a trained SAELens ``SAE`` as the partition's SAELens directory, replacing any old one.

        Written beside the target first, then swapped in, so a failed save leaves the old SAE intact.
        """
        target = self.trained_dir(location)
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        sae.save_model(staging)
        if target.exists():
            retired = target.with_name(f".{target.name}.old.{uuid.uuid4().hex[:8]}")
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
        return target

    def load(self, location: SaeLocation) -> LoadedSae:
        device = str(self.device.torch_device())
        kind = location.entry.sae.kind
        if kind == "saelens":
            sae, source = _load_pretrained(location, device)
        elif kind == "local":
            path = location.entry.sae_path(location.layer)
            sae, source = _load_directory(path, f"{location.model_key} layer {location.layer}", device), str(path)
        else:
            path = self.trained_dir(location)
            if not (path / "cfg.json").exists():
                raise SaeLoadError(
                    f"No trained SAE for {location.model_key!r} layer {location.layer} at {path}: "
                    "materialize asset trained_sae for this partition first."
                )
            sae, source = _load_directory(path, f"{location.model_key} layer {location.layer}", device), str(path)
        loaded = LoadedSae(sae=sae, location=location, source=source)
        expected = location.entry.d_model
        if expected is not None and loaded.d_in != expected:
            raise SaeLoadError(
                f"SAE for {location.model_key!r} layer {location.layer} ({source}) has d_in={loaded.d_in}, "
                f"but the model's hook {location.hook_name!r} is {expected} wide: the catalog points at an "
                "SAE for another model or hook."
            )
        return loaded
