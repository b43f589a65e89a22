from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sae_assets.catalog import load_catalog
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.sae_source import SaeLoadError, SaeSourceResource
from tests.builders import build_topk_sae, save_topk_sae


def _source(lake_root: str) -> SaeSourceResource:
    return SaeSourceResource(device=DeviceResource(device="cpu"), lake=LakeResource(root=lake_root))


def test_pretrained_release_offline_names_the_hub_repo(lake_root: str) -> None:
    location = load_catalog().resolve("gemma-2-2b@gemmascope-res-16k", 12)
    with pytest.raises(SaeLoadError, match=r"layer_12/width_16k/canonical.*'google/gemma-scope-2b-pt-res'"):
        _source(lake_root).load(location)


def test_local_directory_and_width_check(test_catalog: Path, lake_root: str) -> None:
    location = load_catalog().resolve("smollm2-135m@wrong-width", 1)
    with pytest.raises(SaeLoadError, match="cfg.json missing"):
        _source(lake_root).load(location)
    save_topk_sae(location.entry.sae_path(1), d_in=64)
    with pytest.raises(SaeLoadError, match=r"d_in=64.*is 576 wide"):
        _source(lake_root).load(location)


def test_trained_sae_store_and_load_round_trip(test_catalog: Path, lake_root: str) -> None:
    source = _source(lake_root)
    location = load_catalog().resolve("smollm2-135m@test-res", 3)
    with pytest.raises(SaeLoadError, match="materialize asset trained_sae"):
        source.load(location)
    first = build_topk_sae(d_in=576, d_sae=64, seed=1)
    path = source.store_trained(location, first)
    second = build_topk_sae(d_in=576, d_sae=64, seed=2)
    assert source.store_trained(location, second) == path  # replaced in place
    loaded = source.load(location)
    assert loaded.d_in == 576 and loaded.d_sae == 64 and loaded.architecture == "topk"
    assert torch.equal(loaded.sae.W_dec, second.W_dec)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging leftovers


def test_a_truncated_weights_file_or_a_wrongly_typed_cfg_field_is_named(test_catalog: Path, lake_root: str) -> None:
    location = load_catalog().resolve("smollm2-135m@wrong-width", 1)
    path = location.entry.sae_path(1)
    save_topk_sae(path, d_in=576)
    weights = path / "sae_weights.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # a copy cut short
    with pytest.raises(SaeLoadError, match=rf"layer 1: {weights} is truncated or corrupt: the file is [\d,]+ bytes "
                       r"but its safetensors header describes [\d,]+"):
        _source(lake_root).load(location)
    weights.write_bytes(whole)
    cfg = json.loads((path / "cfg.json").read_text())
    (path / "cfg.json").write_text(json.dumps({**cfg, "d_sae": "abc"}))
    with pytest.raises(SaeLoadError, match=r"cfg.json: 'd_sae' must be a positive integer, got \"abc\" \(text\)"):
        _source(lake_root).load(location)
    (path / "cfg.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "d_in"}))
    with pytest.raises(SaeLoadError, match=r"cfg.json has no 'd_in' \(the SAE's input width\)"):
        _source(lake_root).load(location)
    (path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "topkk"}))
    with pytest.raises(SaeLoadError, match=r"'architecture' 'topkk' is not one SAELens knows \(abstopk, .*topk"):
        _source(lake_root).load(location)
    (path / "cfg.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "architecture"}))
    with pytest.raises(SaeLoadError, match=r"cfg.json lacks the field 'architecture' that SAELens needs"):
        _source(lake_root).load(location)
    (path / "cfg.json").write_text(json.dumps(cfg))
    assert _source(lake_root).load(location).d_in == 576  # the same files, repaired, load
