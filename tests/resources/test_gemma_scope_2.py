"""Gemma Scope 2 SAEs and Gemma 3 270M loaded by their hub ids, as a researcher's machine loads them from the Hugging
Face hub: here from a hub-shaped server on 127.0.0.1 (tests/hub_server.py) serving SAEs written in Gemma Scope 2's
on-hub layout (tests/gemma_scope_files.py) and the model dequantized from the packaged GGUF."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import torch

from sae_assets.catalog import LanguageModelSpec, load_catalog
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.language_model import ModelLoadError, load_language_model
from sae_assets.resources.sae_source import SaeLoadError, SaeSourceResource
from tests.gemma_scope_files import (
    MODEL_REPO,
    RELEASE,
    SAE_REPO,
    publish_jumprelu_sae,
    publish_model,
    random_params,
    sae_folder,
    sae_id,
    write_gemma_scope_sae,
)
from tests.hub_server import HubServer, hub_endpoint

MODEL_KEY = "gemma-3-270m@gemmascope-2-res-16k"
D_SAE = 64


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """The loopback hub with layer 12's SAE (with config.json) and layer 5's (without); clients pointed at it with
    an empty Hugging Face cache for the whole module."""
    root = tmp_path_factory.mktemp("hub")
    write_gemma_scope_sae(root, 12, random_params(D_SAE, seed=12))
    write_gemma_scope_sae(root, 5, random_params(D_SAE, seed=5), config=False)
    with HubServer(root) as server, hub_endpoint(server.url, tmp_path_factory.mktemp("hf-home")):
        yield server


@pytest.fixture(scope="module")
def gemma_models(hub: HubServer) -> Iterator[tuple]:
    """Gemma 3 270M loaded twice (~1.07 GB each in float32): by its hub id through the loopback hub, and from the
    packaged GGUF as the embedded catalog entry loads it. The hub-loaded one leaves the process's model cache
    afterwards: without the loopback hub, that entry cannot load."""
    from sae_assets.resources import language_model

    publish_model(hub.root)
    catalog = load_catalog()
    cpu, spec = torch.device("cpu"), catalog.entry(MODEL_KEY).language_model
    hub.requests.clear()
    from_hub = load_language_model(spec, cpu, torch.float32)
    assert any(method == "GET" and path.startswith(f"/{MODEL_REPO}/resolve/") and path.endswith("/model.safetensors")
               for method, path, _ in hub.requests)  # downloaded from the loopback hub
    from_gguf = load_language_model(catalog.entry("gemma-3-270m@demo-res").language_model, cpu, torch.float32)
    yield from_hub, from_gguf
    language_model._CACHE.pop((spec, str(cpu), str(torch.float32)), None)


def _source(tmp_path: Path) -> SaeSourceResource:
    return SaeSourceResource(device=DeviceResource(device="cpu"), lake=LakeResource(root=str(tmp_path / "lake")))


def test_the_server_answers_as_the_hub(hub: HubServer) -> None:
    url = f"{hub.url}/{SAE_REPO}/resolve/main/{sae_folder(12)}/params.safetensors"
    whole = (hub.root / SAE_REPO / sae_folder(12) / "params.safetensors").read_bytes()
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(whole)
    assert len(head.headers["X-Repo-Commit"]) == 40 and head.headers["ETag"].startswith('"')
    assert head.headers["Accept-Ranges"] == "bytes"
    part = requests.get(url, headers={"Range": "bytes=8-23"}, timeout=5)
    assert part.status_code == 206 and part.content == whole[8:24]
    assert part.headers["Content-Range"] == f"bytes 8-23/{len(whole)}"
    assert requests.get(url, headers={"Range": "bytes=-4"}, timeout=5).content == whole[-4:]
    assert requests.get(url, headers={"Range": f"bytes={len(whole)}-"}, timeout=5).status_code == 416
    at_commit = url.replace("/main/", f"/{head.headers['X-Repo-Commit']}/")
    assert requests.get(at_commit, timeout=5).content == whole
    missing = requests.head(url.replace("layer_12", "layer_9"), timeout=5)
    assert (missing.status_code, missing.headers["X-Error-Code"]) == (404, "EntryNotFound")
    assert requests.head(f"{hub.url}/google/nope/resolve/main/x", timeout=5).headers["X-Error-Code"] == "RepoNotFound"
    assert requests.head(url.replace("/main/", "/v9/"), timeout=5).headers["X-Error-Code"] == "RevisionNotFound"
    from huggingface_hub import HfApi  # the client's own parsing of the API answers

    api = HfApi()
    assert api.model_info(SAE_REPO).sha == head.headers["X-Repo-Commit"]
    assert f"{sae_folder(12)}/params.safetensors" in api.list_repo_files(SAE_REPO)


def test_from_pretrained_gives_the_arrays_written(hub: HubServer) -> None:
    from sae_lens import SAE

    params = random_params(D_SAE, seed=12)
    hub.requests.clear()
    sae = SAE.from_pretrained(RELEASE, sae_id(12))
    ranges = [r for method, path, r in hub.requests if r and path.endswith(f"{sae_folder(12)}/params.safetensors")]
    assert ranges[:1] == ["bytes=0-7"] and len(ranges) == 2  # the header's length, then the header (d_in, d_sae)
    assert type(sae).__name__ == "JumpReLUSAE" and (sae.cfg.d_in, sae.cfg.d_sae) == (640, D_SAE)
    assert sae.cfg.metadata.hook_name == "blocks.12.hook_resid_post" and sae.cfg.dtype == "float32"
    assert sae.cfg.metadata.model_name == "google/gemma-3-270m" and not sae.cfg.apply_b_dec_to_input
    for name, attr in (("w_enc", "W_enc"), ("w_dec", "W_dec"), ("b_enc", "b_enc"), ("b_dec", "b_dec"),
                       ("threshold", "threshold")):
        assert torch.equal(getattr(sae, attr).detach(), params[name]), name
    x = torch.randn(256, 640, generator=torch.Generator().manual_seed(0))
    pre = x @ params["w_enc"] + params["b_enc"]
    expected = torch.where(pre > params["threshold"], torch.relu(pre), torch.zeros(()))
    with torch.no_grad():
        acts = sae.encode(x)
    torch.testing.assert_close(acts, expected, rtol=1e-5, atol=1e-6)
    cut = (pre > 0) & (pre <= params["threshold"])  # positive, but under the threshold: the JumpReLU zeroes them
    assert cut.any() and (acts[cut] == 0).all() and (acts > 0).any()


def test_a_folder_without_config_json_is_inferred(hub: HubServer) -> None:
    from sae_lens import SAE

    sae = SAE.from_pretrained(RELEASE, sae_id(5))
    assert sae.cfg.metadata.hook_name == "blocks.5.hook_resid_post" and sae.cfg.d_sae == D_SAE
    assert torch.equal(sae.W_dec.detach(), random_params(D_SAE, seed=5)["w_dec"])


def test_a_platform_sae_published_in_the_layout_encodes_alike(hub: HubServer, tmp_path: Path) -> None:
    from sae_lens import SAE
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(3)
    ours = JumpReLUSAE(JumpReLUSAEConfig(d_in=640, d_sae=D_SAE, apply_b_dec_to_input=True))
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        ours.threshold.abs_()
    publish_jumprelu_sae(ours, hub.root, 15)
    loaded = SAE.from_pretrained(RELEASE, sae_id(15))
    x = torch.randn(64, 640)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), ours.encode(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded.decode(ours.encode(x)), ours.decode(ours.encode(x)))


def test_the_catalog_entry_loads_through_sae_source(hub: HubServer, tmp_path: Path) -> None:
    loaded = _source(tmp_path).load(load_catalog().resolve(MODEL_KEY, 12))
    assert loaded.hook_name == "blocks.12.hook_resid_post" and loaded.location.hook_name == loaded.hook_name
    assert (loaded.d_in, loaded.d_sae, loaded.architecture) == (640, D_SAE, "jumprelu")
    assert torch.equal(loaded.sae.W_enc.detach(), random_params(D_SAE, seed=12)["w_enc"])
    assert loaded.source == f"SAELens {RELEASE} / {sae_id(12)} ({SAE_REPO})"


def test_a_layer_missing_on_the_hub_names_the_file(hub: HubServer, tmp_path: Path) -> None:
    location = load_catalog().resolve(MODEL_KEY, 9)
    with pytest.raises(SaeLoadError) as caught:
        _source(tmp_path).load(location)
    message = str(caught.value)
    assert message.startswith(f"The Hugging Face hub at {hub.url} has no file "
                              f"'{sae_folder(9)}/params.safetensors' for SAE '{sae_id(9)}' of SAELens release "
                              f"'{RELEASE}' (folder '{sae_folder(9)}' of the Hugging Face hub repo '{SAE_REPO}')")
    assert "\n" not in message and message.count(". ") == 0


def test_an_unreachable_hub_names_the_endpoint(hub: HubServer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.utils._http as hf_http

    waits: list[float] = []

    class NoWait:  # huggingface_hub backs off 1+2+4+8+8 s before giving up: record the waits, skip them
        def __getattr__(self, name: str):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            waits.append(seconds)

    monkeypatch.setattr(hf_http, "time", NoWait())
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    with hub_endpoint(closed, tmp_path / "hf-home"):
        with pytest.raises(SaeLoadError) as caught:
            _source(tmp_path).load(load_catalog().resolve(MODEL_KEY, 12))
        with pytest.raises(ModelLoadError) as model_caught:
            load_language_model(LanguageModelSpec(hub_id="google/gemma-3-270m-it"), torch.device("cpu"),
                                torch.float32)  # not the catalog's spec, which a test may have loaded already
    assert str(caught.value) == (
        f"Could not reach the Hugging Face hub at {closed} to download SAE '{sae_id(12)}' of SAELens release "
        f"'{RELEASE}' (folder '{sae_folder(12)}' of the Hugging Face hub repo '{SAE_REPO}'); check network access "
        "to it (HF_ENDPOINT, proxies) or point the catalog entry at a local SAELens directory.")
    assert str(model_caught.value).startswith(
        f"Could not reach the Hugging Face hub at {closed} to download language model 'google/gemma-3-270m-it'; ")
    assert waits  # the client did retry before the platform reported it


@pytest.mark.slow
def test_the_model_loads_by_its_hub_id_as_the_gguf_one(gemma_models: tuple) -> None:
    from_hub, from_gguf = gemma_models
    assert (from_hub.n_layers, from_hub.d_model) == (18, 640) and from_hub.name == "google/gemma-3-270m"
    assert type(from_hub.model.original_model).__name__ == "Gemma3ForCausalLM"
    text = "The quick brown fox jumps over the lazy dog."
    ids = from_hub.tokenize(text)
    assert ids == from_gguf.tokenize(text) and from_hub.bos_token_id == from_gguf.bos_token_id == 2
    tokens = torch.tensor([[from_hub.bos_token_id, *ids]])
    for hook in ("blocks.5.hook_resid_post", "blocks.12.hook_resid_post"):
        acts = from_hub.hook_activations(tokens, hook)
        assert acts.shape == (1, tokens.shape[1], 640)
        torch.testing.assert_close(acts, from_gguf.hook_activations(tokens, hook), rtol=0, atol=0)


@pytest.mark.slow
def test_the_hub_model_with_a_gemma_scope_2_sae(gemma_models: tuple, tmp_path: Path) -> None:
    from_hub = gemma_models[0]
    loaded = _source(tmp_path).load(load_catalog().resolve(MODEL_KEY, 12))
    text = "Sparse autoencoders read the residual stream."
    acts = from_hub.hook_activations(torch.tensor([[from_hub.bos_token_id, *from_hub.tokenize(text)]]),
                                     loaded.hook_name)
    with torch.no_grad():
        latents = loaded.sae.encode(acts[0])
    assert latents.shape == (acts.shape[1], D_SAE) and torch.isfinite(latents).all()


def test_a_model_repo_missing_on_the_hub_is_named(hub: HubServer) -> None:
    spec = LanguageModelSpec(hub_id="google/gemma-3-999m")
    with pytest.raises(ModelLoadError) as caught:
        load_language_model(spec, torch.device("cpu"), torch.float32)
    assert str(caught.value) == (f"The Hugging Face hub at {hub.url} has no model repo 'google/gemma-3-999m' (or it "
                                 "is private); check the catalog's language_model.hub_id, and HF_TOKEN for a private "
                                 "repo.")
