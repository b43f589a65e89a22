"""A SAELens directory's two files, checked before SAELens loads them.

``cfg.json`` must be a JSON object whose shape fields (``d_in``, ``d_sae``, and ``k`` where given) are positive
integers; ``sae_weights.safetensors`` must be a whole safetensors file (8-byte header length, JSON header, then
exactly the bytes the header's tensors cover) whose ``W_dec`` / ``W_enc`` shapes agree with ``cfg.json``. Only the
header is read, so the drop-folder sensor can afford the check on every change. Each problem raises
:class:`SaeFileError` naming the file, the field and what to do, instead of SAELens's or safetensors' own errors
("header too small", "empty() takes 1 positional argument but 2 were given").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sae_assets.core.common.json_values import is_positive_int, json_kind

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
MAX_HEADER_BYTES = 100_000_000
"""safetensors' own limit on the JSON header; a larger length means the first bytes are not a header."""
RESAVE = "re-save the SAE with SAELens (SAE.save_model writes cfg.json and sae_weights.safetensors) or copy it again"


class SaeFileError(ValueError):
    """A SAELens directory's cfg.json or weights file is unusable; the message names the file and the field."""


def read_cfg(directory: Path) -> dict[str, Any]:
    """``directory/cfg.json`` as a dict, its shape fields checked."""
    path = directory / CFG_FILE
    if not path.is_file():
        raise SaeFileError(f"SAE folder {directory} has no {CFG_FILE}: a SAELens directory holds {CFG_FILE} and "
                           f"{WEIGHTS_FILE} (SAE.save_model writes both).")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SaeFileError(f"{path} is not readable JSON ({err}): {RESAVE}.") from err
    if not isinstance(cfg, dict):
        raise SaeFileError(f"{path} holds {json_kind(cfg)}, not a JSON object: {RESAVE}.")
    for name in ("d_in", "d_sae"):
        if name not in cfg:
            meaning = "input width" if name == "d_in" else "latent count"
            raise SaeFileError(f"{path} has no '{name}' (the SAE's {meaning}): add it as a positive integer or "
                               f"{RESAVE}.")
    for name in ("d_in", "d_sae", "k"):
        if name in cfg and not is_positive_int(cfg[name]):
            got = "null" if cfg[name] is None else f"{json.dumps(cfg[name])} ({json_kind(cfg[name])})"
            raise SaeFileError(f"{path}: '{name}' must be a positive integer, got {got}: fix the field or {RESAVE}.")
    if "architecture" in cfg and not isinstance(cfg["architecture"], str):
        raise SaeFileError(f"{path}: 'architecture' must be text such as \"topk\", got "
                           f"{json.dumps(cfg['architecture'])}: fix the field or {RESAVE}.")
    return cfg


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """(the safetensors JSON header, the file's size in bytes)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little") if size >= 8 else 0
        if size < 8 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise SaeFileError(f"{path} is truncated or not a safetensors file ({size} bytes, "
                               + ("less than its 8-byte header length" if size < 8 else
                                  f"its header length reads {length} bytes") + f"): {RESAVE}.")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except ValueError as err:
        raise SaeFileError(f"{path} is corrupt: its safetensors header is not JSON ({err}): {RESAVE}.") from err
    if not isinstance(header, dict):
        raise SaeFileError(f"{path} is corrupt: its safetensors header is not a JSON object: {RESAVE}.")
    return header, 8 + length


def check_weights(directory: Path, cfg: dict[str, Any]) -> None:
    """``directory/sae_weights.safetensors`` is whole and its decoder / encoder shapes match ``cfg``."""
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise SaeFileError(f"SAE folder {directory} has no {WEIGHTS_FILE}: {RESAVE}.")
    try:
        header, data_start = _header(path)
        size = path.stat().st_size
    except OSError as err:
        raise SaeFileError(f"{path} cannot be read ({type(err).__name__}: {err}).") from err
    tensors = {name: spec for name, spec in header.items() if name != "__metadata__"}
    try:
        end = max((int(spec["data_offsets"][1]) for spec in tensors.values()), default=0)
        shapes = {name: [int(n) for n in spec["shape"]] for name, spec in tensors.items()}
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise SaeFileError(f"{path} is corrupt: a tensor in its safetensors header lacks a shape or data offsets "
                           f"({type(err).__name__}: {err}): {RESAVE}.") from err
    if data_start + end != size:
        raise SaeFileError(f"{path} is truncated or corrupt: the file is {size:,} bytes but its safetensors header "
                           f"describes {data_start + end:,} (a copy still in progress, or cut short): {RESAVE}.")
    for name, axis, field in (("W_dec", 0, "d_sae"), ("W_enc", 0, "d_in"), ("W_enc", 1, "d_sae")):
        shape, want = shapes.get(name), cfg.get(field)
        if shape is not None and len(shape) == 2 and want is not None and shape[axis] != want:
            raise SaeFileError(f"{directory}: cfg.json says {field}={want} but {name} in {WEIGHTS_FILE} has shape "
                               f"{shape}: the two files are from different SAEs; {RESAVE}.")


def check_directory(directory: Path) -> dict[str, Any]:
    """Both files checked; the parsed ``cfg.json``."""
    cfg = read_cfg(directory)
    check_weights(directory, cfg)
    return cfg
