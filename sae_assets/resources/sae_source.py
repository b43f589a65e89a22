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
from sae_assets.resources.hub_errors import classify_hub_error, hub_endpoint
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


def _pretrained_failure(err: Exception, sae_id: str, release: str, repo: str, folder: str | None) -> str:
    """One sentence on why SAELens could not fetch the SAE from the hub, and what to do about it."""
    failure, endpoint = classify_hub_error(err), hub_endpoint()
    where = f"folder {folder!r} of " if folder else ""
    what = f"SAE {sae_id!r} of SAELens release {release!r} ({where}the Hugging Face hub repo {repo!r})"
    if failure.kind == "offline":
        return (f"Could not download {what}: it is not in the local Hugging Face cache and the hub is offline here "
                f"(HF_HUB_OFFLINE is set); unset it where {endpoint} is reachable, or point the catalog entry at a "
                "local SAELens directory.")
    if failure.kind == "unreachable":
        return (f"Could not reach the Hugging Face hub at {endpoint} to download {what}; check network access to it "
                "(HF_ENDPOINT, proxies) or point the catalog entry at a local SAELens directory.")
    if failure.kind == "file":
        missing = f"has no file {failure.path!r}" if failure.path else "lacks its files"
        return (f"The Hugging Face hub at {endpoint} {missing} for {what}: that SAE is not published there, so check "
                "the catalog's sae.id and layers against the repo.")
    if failure.kind == "repo":
        return (f"The Hugging Face hub at {endpoint} has no repo {repo!r} (or it is private) for {what}; check the "
                "catalog's sae.release, and HF_TOKEN for a private repo.")
    if failure.kind == "access":
        return (f"The Hugging Face hub at {endpoint} refused access to {what}; accept the repo's terms on the hub and "
                "set HF_TOKEN to a token that may read it.")
    return f"Could not load {what} ({type(err).__name__}: {err})."


def _load_pretrained(location: SaeLocation, device: str) -> tuple[Any, str]:
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, sae_id = location.entry.sae.release, location.entry.sae_id(location.layer)
    entry = get_pretrained_saes_directory().get(release) if release else None
    if release is None or entry is None:
        raise SaeLoadError(f"SAELens has no pretrained release {release!r} (model key {location.model_key!r}); "
                           "check the catalog's sae.release against SAELens's pretrained_saes.yaml.")
    repo, folder = entry.repo_id, entry.saes_map.get(sae_id)
    if folder is None:
        raise SaeLoadError(f"SAELens release {release!r} has no SAE {sae_id!r} (model key {location.model_key!r} "
                           f"layer {location.layer}); check the catalog's sae.id and layers against the release.")
    try:
        sae = SAE.from_pretrained(release, sae_id, device=device)
    except Exception as err:  # hub errors come as OSError, requests/httpx errors or HF's own classes
        raise SaeLoadError(_pretrained_failure(err, sae_id, release, repo, folder)) from err
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
