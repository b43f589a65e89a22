"""SAEs dropped into the drop folder become catalog entries; bad folders are skipped with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sae_assets.catalog import CatalogError, load_catalog
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.sae_source import SaeSourceResource
from tests.builders import save_topk_sae


def drop_sae(folder: Path, key: str, layer: int, d_in: int = 576, hook: str | None = None) -> Path:
    path = folder / key / str(layer)
    save_topk_sae(path, d_in=d_in, d_sae=64, k=4, hook_name=hook or f"blocks.{layer}.hook_resid_post")
    return path


def test_dropped_saes_become_local_entries_that_load(test_catalog: Path, tmp_path: Path) -> None:
    drop = tmp_path / "sae_drop"
    assert "smollm2-135m@mine" not in load_catalog().entries  # nothing dropped yet
    drop_sae(drop, "smollm2-135m@mine", 2)
    drop_sae(drop, "smollm2-135m@mine", 5)
    catalog = load_catalog()
    entry = catalog.entry("smollm2-135m@mine")
    assert entry.layers == (2, 5) and entry.sae.kind == "local" and entry.d_model == 576
    assert entry.hook_name(5) == "blocks.5.hook_resid_post"
    assert entry.language_model == catalog.entry("smollm2-135m@test-res").language_model
    assert entry.sae_path(5) == drop / "smollm2-135m@mine" / "5" and catalog.errors == {}
    loaded = SaeSourceResource(device=DeviceResource(device="cpu"), lake=LakeResource(root=str(tmp_path / "lake"))
                               ).load(catalog.resolve("smollm2-135m@mine", 5))
    assert loaded.sae.cfg.d_sae == 64 and loaded.sae.W_dec.device == torch.device("cpu")


def test_bad_folders_are_skipped_with_their_reason(test_catalog: Path, tmp_path: Path) -> None:
    drop = tmp_path / "sae_drop"
    drop_sae(drop, "smollm2-135m@good", 1)
    (drop / "smollm2-135m@good" / "7").mkdir()  # no cfg.json: this layer is skipped, layer 1 stays
    drop_sae(drop, "smollm2-135m@good", 3, hook="blocks.4.hook_resid_post")  # hook at another layer
    (drop / "not|a key").mkdir()
    drop_sae(drop, "pythia-70m@nobase", 1)  # no catalog entry for the language model
    drop_sae(drop, "smollm2-135m@test-res", 1)  # the YAML catalog has this key
    drop_sae(drop, "smollm2-135m@narrow", 1, d_in=32)  # not the model's width
    broken = drop / "smollm2-135m@broken" / "2"
    broken.mkdir(parents=True)
    (broken / "cfg.json").write_text("{not json")
    (broken / "sae_weights.safetensors").write_bytes(b"")
    layer_name = drop / "smollm2-135m@good" / "last"
    layer_name.mkdir()

    catalog = load_catalog()
    assert catalog.entry("smollm2-135m@good").layers == (1,)
    assert catalog.entry("smollm2-135m@test-res").sae.kind == "train"  # the YAML entry is untouched
    errors = {Path(k).relative_to(drop).as_posix(): v for k, v in catalog.errors.items()}
    assert set(errors) == {"smollm2-135m@good/7", "smollm2-135m@good/3", "not|a key", "pythia-70m@nobase",
                           "smollm2-135m@test-res", "smollm2-135m@narrow", "smollm2-135m@broken/2",
                           "smollm2-135m@good/last"}
    assert "has no cfg.json" in errors["smollm2-135m@good/7"]
    assert "is not at layer 3" in errors["smollm2-135m@good/3"]
    assert "Invalid model key" in errors["not|a key"]
    assert "no catalog entry for model 'pythia-70m'" in errors["pythia-70m@nobase"]
    assert "already in the SAE catalog" in errors["smollm2-135m@test-res"]
    assert "d_in 32 differs" in errors["smollm2-135m@narrow"]
    assert "not readable JSON" in errors["smollm2-135m@broken/2"]
    assert "must be a layer number" in errors["smollm2-135m@good/last"]
    with pytest.raises(CatalogError, match="Unknown model key 'pythia-70m@nobase'"):
        catalog.entry("pythia-70m@nobase")


def test_metadata_hook_name_and_changes_are_seen(test_catalog: Path, tmp_path: Path) -> None:
    drop = tmp_path / "sae_drop"
    path = drop_sae(drop, "smollm2-135m@mine", 1)
    cfg = json.loads((path / "cfg.json").read_text())
    assert "hook_name" not in cfg and cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"  # SAELens 6
    first = load_catalog()
    assert first.entry("smollm2-135m@mine").layers == (1,) and load_catalog() is first  # cached
    drop_sae(drop, "smollm2-135m@mine", 3)
    assert load_catalog().entry("smollm2-135m@mine").layers == (1, 3)


def test_a_half_copied_or_mistyped_sae_is_skipped_until_fixed(test_catalog: Path, tmp_path: Path) -> None:
    drop = tmp_path / "sae_drop"
    drop_sae(drop, "smollm2-135m@mine", 1)
    weights = drop_sae(drop, "smollm2-135m@mine", 2) / "sae_weights.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:1000])  # a copy still in progress
    typed = drop_sae(drop, "smollm2-135m@typed", 1) / "cfg.json"
    typed.write_text(json.dumps({**json.loads(typed.read_text()), "d_in": "576"}))
    catalog = load_catalog()
    assert catalog.entry("smollm2-135m@mine").layers == (1,)  # layer 2 waits, layer 1 is used
    assert catalog.errors[str(weights.parent)] == (
        f"{weights} is truncated or corrupt: the file is 1,000 bytes but its safetensors header describes "
        f"{len(whole):,} (a copy still in progress, or cut short): re-save the SAE with SAELens (SAE.save_model "
        "writes cfg.json and sae_weights.safetensors) or copy it again.")
    assert f"{typed}: 'd_in' must be a positive integer, got \"576\" (text)" in catalog.errors[str(typed.parent)]
    weights.write_bytes(whole)  # the copy completes
    assert load_catalog().entry("smollm2-135m@mine").layers == (1, 2)
